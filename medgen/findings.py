"""Structured findings: the typed contract shared by the phantom, the report writer, the reader, the layout
and the analyzer.

JSON form (``Findings.to_json`` / ``Findings.from_json``), schema version 1::

    {"schema_version": 1, "normal": false,
     "lesions": [{"lobe": "right_upper", "diameter_mm": 24.0, "diameters_mm": [24.0, 18.0],
                  "type": "part-solid", "density": 0.5, "margin": "lobulated", "certainty": "definite"}],
     "effusion": {"side": "left", "grade": "small", "certainty": "definite"},
     "emphysema": {"grade": "moderate", "distribution": "upper", "certainty": "definite"}}

A lesion's ``type`` is the word class of its density (`medgen.volume.density_class`); a lesion given with
a type and no density takes the type's default density (ground-glass 0.15, part-solid 0.5, solid 0.95).
``certainty`` is "possible" for hedged findings ("cannot be excluded"); they are still findings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from medgen.volume import DENSITY_WORD_DEFAULTS, density_class

SCHEMA_VERSION = 1
LOBES = ("right_upper", "right_middle", "right_lower", "left_upper", "left_lower")
LOBE_SIDE = {lobe: lobe.split("_")[0] for lobe in LOBES}
LOBE_ZONE = {"right_upper": "upper", "right_middle": "middle", "right_lower": "lower",
             "left_upper": "upper", "left_lower": "lower"}
MARGINS = ("smooth", "lobulated", "spiculated")
LESION_TYPES = ("ground-glass", "part-solid", "solid")
SIDES = ("left", "right", "bilateral")
EFFUSION_GRADES = ("small", "moderate", "large")
EMPHYSEMA_GRADES = ("mild", "moderate", "severe")
EMPHYSEMA_DISTRIBUTIONS = ("diffuse", "upper")
CERTAINTIES = ("definite", "possible")

# Label-map values written beside every phantom volume.
LABELS = {
    "background": 0, "body": 1, "bone": 2,
    "right_upper": 3, "right_middle": 4, "right_lower": 5, "left_upper": 6, "left_lower": 7,
    "lesion": 8, "effusion": 9, "airway": 10, "mediastinum": 11,
}
LOBE_LABELS = {lobe: LABELS[lobe] for lobe in LOBES}
# Layout label maps (medgen.layout) add emphysema and one label per lesion (lesion i -> FIRST_LESION_LABEL + i - 1).
EMPHYSEMA_LABEL = 12
FIRST_LESION_LABEL = 20
MAX_LESIONS = 20


class FindingsError(ValueError):
    """Findings that cannot be read: bad JSON, a wrong schema version, a missing or invalid field."""


def _number(value, name: str) -> float:
    """A finite real number (not a string or a bool) as float."""
    if isinstance(value, (str, bool)) or not isinstance(value, (int, float)):
        raise ValueError(f"`{name}` must be a number, got {value!r}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"`{name}` must be finite, got {value}")
    return value


def _check(value, allowed, name):
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}")


@dataclass
class Lesion:
    """A nodule (< 30 mm) or mass (>= 30 mm).

    Args:
        lobe: one of `LOBES`.
        diameter_mm: long-axis diameter in mm (> 0).
        density: d in [0, 1]; mean lesion HU = -750 + 800 d. Its word class is `type`.
        margin: one of `MARGINS`.
        center_mm: RAS+ world centre, filled in by the phantom or the layout when it places the lesion.
        diameters_mm: up to three diameters as reported (long axis first); None when only one was given.
        certainty: "definite", or "possible" for a hedged finding.
    """

    lobe: str
    diameter_mm: float
    density: float
    margin: str = "smooth"
    center_mm: tuple[float, float, float] | None = None
    diameters_mm: tuple[float, ...] | None = None
    certainty: str = "definite"

    def __post_init__(self):
        _check(self.lobe, LOBES, "lobe")
        _check(self.margin, MARGINS, "margin")
        _check(self.certainty, CERTAINTIES, "certainty")
        self.density, self.diameter_mm = _number(self.density, "density"), _number(self.diameter_mm, "diameter_mm")
        if not 0.0 <= self.density <= 1.0:
            raise ValueError(f"`density` must be in [0, 1], got {self.density}")
        if not 0 < self.diameter_mm < 1000:
            raise ValueError(f"`diameter_mm` must be a positive size in mm (< 1000), got {self.diameter_mm}")
        if self.center_mm is not None:
            self.center_mm = tuple(float(c) for c in self.center_mm)
        if self.diameters_mm is not None:
            sizes = tuple(sorted((float(d) for d in self.diameters_mm), reverse=True))
            if not 1 <= len(sizes) <= 3 or min(sizes) <= 0:
                raise ValueError(f"`diameters_mm` must hold 1 to 3 positive sizes, got {self.diameters_mm}")
            if abs(sizes[0] - float(self.diameter_mm)) > 1e-6:
                raise ValueError(f"`diameters_mm` must start with `diameter_mm` ({self.diameter_mm}), "
                                 f"got {self.diameters_mm}")
            self.diameters_mm = sizes

    @property
    def side(self) -> str:
        return LOBE_SIDE[self.lobe]

    @property
    def zone(self) -> str:
        return LOBE_ZONE[self.lobe]

    @property
    def kind(self) -> str:
        return "mass" if self.diameter_mm >= 30 else "nodule"

    @property
    def type(self) -> str:
        """'ground-glass', 'part-solid' or 'solid': the word class of `density`."""
        return density_class(self.density)

    def to_dict(self) -> dict:
        out = {"lobe": self.lobe, "diameter_mm": float(self.diameter_mm),
               "diameters_mm": list(self.diameters_mm) if self.diameters_mm else None, "type": self.type,
               "density": float(self.density), "margin": self.margin, "certainty": self.certainty}
        if self.center_mm is not None:
            out["center_mm"] = list(self.center_mm)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Lesion":
        data = dict(data)
        kind = data.pop("type", None)
        if kind is None and data.get("density") is None:
            raise ValueError("a lesion needs `density` (0..1) or `type` (ground-glass / part-solid / solid)")
        if kind is not None:
            _check(kind, LESION_TYPES, "type")
            if data.get("density") is None:
                data["density"] = DENSITY_WORD_DEFAULTS[kind]
            elif density_class(float(data["density"])) != kind:
                raise ValueError(f"`type` {kind!r} contradicts `density` {data['density']} "
                                 f"(a {density_class(float(data['density']))!r} density)")
        return cls(**data)


@dataclass
class Effusion:
    side: str
    grade: str
    certainty: str = "definite"

    def __post_init__(self):
        _check(self.side, SIDES, "side")
        _check(self.grade, EFFUSION_GRADES, "grade")
        _check(self.certainty, CERTAINTIES, "certainty")

    def to_dict(self) -> dict:
        return {"side": self.side, "grade": self.grade, "certainty": self.certainty}


@dataclass
class Emphysema:
    grade: str
    upper_predominant: bool = False
    certainty: str = "definite"

    def __post_init__(self):
        _check(self.grade, EMPHYSEMA_GRADES, "grade")
        _check(self.certainty, CERTAINTIES, "certainty")
        self.upper_predominant = bool(self.upper_predominant)

    @property
    def distribution(self) -> str:
        return "upper" if self.upper_predominant else "diffuse"

    def to_dict(self) -> dict:
        return {"grade": self.grade, "distribution": self.distribution, "certainty": self.certainty}

    @classmethod
    def from_dict(cls, data: dict) -> "Emphysema":
        data = dict(data)
        if "distribution" in data:
            distribution = data.pop("distribution")
            _check(distribution, EMPHYSEMA_DISTRIBUTIONS, "distribution")
            data["upper_predominant"] = distribution == "upper"
        return cls(**data)


@dataclass
class Findings:
    lesions: list[Lesion] = field(default_factory=list)
    effusion: Effusion | None = None
    emphysema: Emphysema | None = None

    @property
    def is_normal(self) -> bool:
        return not self.lesions and self.effusion is None and self.emphysema is None

    @property
    def mean_lesion_density(self) -> float | None:
        """Density label of the subject: diameter³-weighted mean over lesions, None if there are none."""
        if not self.lesions:
            return None
        weights = [lesion.diameter_mm**3 for lesion in self.lesions]
        return sum(w * lesion.density for w, lesion in zip(weights, self.lesions, strict=True)) / sum(weights)

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "normal": self.is_normal,
                "lesions": [lesion.to_dict() for lesion in self.lesions],
                "effusion": self.effusion.to_dict() if self.effusion else None,
                "emphysema": self.emphysema.to_dict() if self.emphysema else None}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict) -> "Findings":
        """Build from `to_dict` output (any schema-1 dict, or an older one without a version).

        Raises:
            FindingsError: naming the field that is missing, unknown or invalid.
        """
        if not isinstance(data, dict):
            raise FindingsError(f"findings must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise FindingsError(f"findings `schema_version` must be {SCHEMA_VERSION}, got {version!r}")
        unknown = set(data) - {"schema_version", "normal", "lesions", "effusion", "emphysema"}
        if unknown:
            raise FindingsError(f"findings have unknown field(s) {sorted(unknown)}")
        lesions = data.get("lesions")
        lesions = [] if lesions is None else lesions
        if not isinstance(lesions, list):
            raise FindingsError(f"findings `lesions` must be a list, got {type(lesions).__name__}")
        out = cls(lesions=[_build(Lesion.from_dict, item, f"lesions[{i}]") for i, item in enumerate(lesions)],
                  effusion=_build(lambda d: Effusion(**d), data.get("effusion"), "effusion"),
                  emphysema=_build(Emphysema.from_dict, data.get("emphysema"), "emphysema"))
        if data.get("normal") is True and not out.is_normal:
            raise FindingsError("findings say `normal: true` but list findings")
        return out

    @classmethod
    def from_json(cls, text: str) -> "Findings":
        """Parse findings JSON; any problem raises `FindingsError` with the reason."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise FindingsError(f"findings are not valid JSON ({err.msg} at line {err.lineno}, "
                                f"column {err.colno})") from None
        except RecursionError:  # json recurses once per nesting level
            raise FindingsError("findings JSON is nested too deeply (expected an object of lesions, effusion "
                                "and emphysema)") from None
        return cls.from_dict(data)


def _build(builder, item, where: str):
    if item is None:
        return None
    if not isinstance(item, dict):
        raise FindingsError(f"findings `{where}` must be a JSON object, got {type(item).__name__}")
    try:
        return builder(item)
    except TypeError as err:  # missing or unknown constructor argument
        raise FindingsError(f"findings `{where}`: {err}") from None
    except ValueError as err:
        raise FindingsError(f"findings `{where}`: {err}") from None
