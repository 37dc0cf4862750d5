"""Structured findings: the ground truth shared by the phantom, the report writer and the analyzer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

LOBES = ("right_upper", "right_middle", "right_lower", "left_upper", "left_lower")
LOBE_SIDE = {lobe: lobe.split("_")[0] for lobe in LOBES}
LOBE_ZONE = {"right_upper": "upper", "right_middle": "middle", "right_lower": "lower",
             "left_upper": "upper", "left_lower": "lower"}
MARGINS = ("smooth", "lobulated", "spiculated")
SIDES = ("left", "right", "bilateral")
EFFUSION_GRADES = ("small", "moderate", "large")
EMPHYSEMA_GRADES = ("mild", "moderate", "severe")

# Label-map values written beside every phantom volume.
LABELS = {
    "background": 0, "body": 1, "bone": 2,
    "right_upper": 3, "right_middle": 4, "right_lower": 5, "left_upper": 6, "left_lower": 7,
    "lesion": 8, "effusion": 9, "airway": 10, "mediastinum": 11,
}
LOBE_LABELS = {lobe: LABELS[lobe] for lobe in LOBES}


def _check(value, allowed, name):
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}")


@dataclass
class Lesion:
    """A nodule (< 30 mm) or mass (>= 30 mm).

    Args:
        lobe: one of `LOBES`.
        diameter_mm: 8-50 mm.
        density: d in [0, 1]; mean lesion HU = -750 + 800 d.
        margin: one of `MARGINS`.
        center_mm: RAS+ world centre, filled in by the phantom when it places the lesion.
    """

    lobe: str
    diameter_mm: float
    density: float
    margin: str = "smooth"
    center_mm: tuple[float, float, float] | None = None

    def __post_init__(self):
        _check(self.lobe, LOBES, "lobe")
        _check(self.margin, MARGINS, "margin")
        if not 0.0 <= float(self.density) <= 1.0:
            raise ValueError(f"`density` must be in [0, 1], got {self.density}")
        if not float(self.diameter_mm) > 0:
            raise ValueError(f"`diameter_mm` must be positive, got {self.diameter_mm}")
        if self.center_mm is not None:
            self.center_mm = tuple(float(c) for c in self.center_mm)

    @property
    def side(self) -> str:
        return LOBE_SIDE[self.lobe]

    @property
    def zone(self) -> str:
        return LOBE_ZONE[self.lobe]

    @property
    def kind(self) -> str:
        return "mass" if self.diameter_mm >= 30 else "nodule"


@dataclass
class Effusion:
    side: str
    grade: str

    def __post_init__(self):
        _check(self.side, SIDES, "side")
        _check(self.grade, EFFUSION_GRADES, "grade")


@dataclass
class Emphysema:
    grade: str
    upper_predominant: bool = False

    def __post_init__(self):
        _check(self.grade, EMPHYSEMA_GRADES, "grade")


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
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Findings":
        return cls(
            lesions=[Lesion(**lesion) for lesion in data.get("lesions", [])],
            effusion=Effusion(**data["effusion"]) if data.get("effusion") else None,
            emphysema=Emphysema(**data["emphysema"]) if data.get("emphysema") else None,
        )
