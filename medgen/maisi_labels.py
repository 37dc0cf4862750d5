"""MAISI's CT label space and its mapping to medgen's coarse layout table (`medgen.layout.labels`).

``MAISI_LABELS`` (name -> id) is read from ``maisi_label_dict.json`` beside this module: a verbatim copy of
NVIDIA's CT label dictionary (NV-Generate-CTMR ``configs/label_dict.json``, the ``rflow-ct`` / ``ddpm-ct``
ControlNet's label space: ids 1..132 and ``body`` = 200).

MAISI has no label for pleural effusion or emphysema. medgen gives them its own ids outside MAISI's range,
``MEDGEN_EFFUSION_ID`` = 210 and ``MEDGEN_EMPHYSEMA_ID`` = 211 (both fit uint8, neither is a MAISI id). They
appear in medgen's MAISI-space label maps only; before a label map goes to MAISI's ControlNet the renderer
replaces them by the MAISI label they were painted over (see `medgen.render.maisi`).

``to_coarse`` maps every MAISI id (and the two medgen ids) to medgen's coarse table: lobes to the five lobe
values, ``lung tumor`` to ``FIRST_LESION_LABEL`` (lesion 1; MAISI has one tumour label, so all tumours merge),
trachea/airway to ``airway``, heart and the great thoracic vessels/oesophagus/thyroid to ``mediastinum``,
skeleton (vertebrae, ribs, sternum, costal cartilages, shoulder/pelvic bones, skull, bone lesion) to ``bone``,
every other labelled organ or muscle and ``body`` to ``body``; 0 stays background.

``from_coarse`` maps the coarse values that have a single MAISI meaning (body, lobes, lesions -> lung tumor,
airway, effusion, emphysema). ``bone`` and ``mediastinum`` have no single MAISI id: they raise unless the
caller names an id for them with ``fallback``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medgen.findings import EMPHYSEMA_LABEL, FIRST_LESION_LABEL, LABELS, MAX_LESIONS

LABEL_DICT_FILE = Path(__file__).with_name("maisi_label_dict.json")


def load_label_dict(path: str | Path = LABEL_DICT_FILE) -> dict[str, int]:
    """A MAISI label dictionary (name -> int id) from a JSON file."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise ValueError(f"{path}: a MAISI label dictionary maps names to integer ids")
    return {str(k): int(v) for k, v in data.items()}


MAISI_LABELS: dict[str, int] = load_label_dict()
MAISI_MAX_ID = max(MAISI_LABELS.values())
MEDGEN_EFFUSION_ID = 210
MEDGEN_EMPHYSEMA_ID = 211
MEDGEN_IDS = {"pleural effusion": MEDGEN_EFFUSION_ID, "emphysema": MEDGEN_EMPHYSEMA_ID}

MAISI_LOBES = {"right_upper": "right lung upper lobe", "right_middle": "right lung middle lobe",
               "right_lower": "right lung lower lobe", "left_upper": "left lung upper lobe",
               "left_lower": "left lung lower lobe"}
LOBE_IDS = {lobe: MAISI_LABELS[name] for lobe, name in MAISI_LOBES.items()}
LUNG_TUMOR_ID = MAISI_LABELS["lung tumor"]
BODY_ID = MAISI_LABELS["body"]
AIRWAY_IDS = (MAISI_LABELS["trachea"], MAISI_LABELS["airway"])

_MEDIASTINUM = ("heart", "aorta", "esophagus", "superior vena cava", "inferior vena cava", "pulmonary vein",
                "left atrial appendage", "brachiocephalic trunk", "left brachiocephalic vein",
                "right brachiocephalic vein", "left common carotid artery", "right common carotid artery",
                "left subclavian artery", "right subclavian artery", "thyroid gland")
_BONE_WORDS = ("vertebrae", "rib ", "humerus", "scapula", "clavicula", "femur", "hip", "sacrum", "skull",
               "sternum", "costal cartilages", "bone lesion")


def _coarse_of(name: str) -> int:
    if name in MAISI_LOBES.values():
        return LABELS[next(k for k, v in MAISI_LOBES.items() if v == name)]
    if name == "lung tumor":
        return FIRST_LESION_LABEL
    if name in ("trachea", "airway"):
        return LABELS["airway"]
    if name in _MEDIASTINUM:
        return LABELS["mediastinum"]
    if any(name.startswith(w) or f" {w}" in f" {name}" for w in _BONE_WORDS):
        return LABELS["bone"]
    return LABELS["body"]


# id -> coarse value for every MAISI id and medgen's own ids (dummy ids are unused in MAISI: body).
MAISI_TO_COARSE: dict[int, int] = {
    0: LABELS["background"],
    **{i: _coarse_of(name) for name, i in MAISI_LABELS.items()},
    MEDGEN_EFFUSION_ID: LABELS["effusion"], MEDGEN_EMPHYSEMA_ID: EMPHYSEMA_LABEL,
}
COARSE_TO_MAISI: dict[int, int] = {
    LABELS["background"]: 0, LABELS["body"]: BODY_ID, **{LABELS[k]: v for k, v in LOBE_IDS.items()},
    LABELS["lesion"]: LUNG_TUMOR_ID, LABELS["effusion"]: MEDGEN_EFFUSION_ID, LABELS["airway"]: MAISI_LABELS["airway"],
    EMPHYSEMA_LABEL: MEDGEN_EMPHYSEMA_ID,
    **{FIRST_LESION_LABEL + i: LUNG_TUMOR_ID for i in range(MAX_LESIONS)},
}
AMBIGUOUS_COARSE = {"bone": LABELS["bone"], "mediastinum": LABELS["mediastinum"]}


def _lookup(labels: np.ndarray, table: dict[int, int], what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        if not np.all(labels == np.round(labels)):
            raise ValueError(f"{what} label map must hold integer ids")
        labels = labels.astype(np.int64)
    values = np.unique(labels)
    if values.size and values.min() < 0:
        raise ValueError(f"{what} label map holds negative ids")
    unknown = [int(v) for v in values if int(v) not in table]
    if unknown:
        raise ValueError(f"{what} label map holds ids with no mapping: {unknown[:10]}")
    lut = np.zeros(int(values.max()) + 1 if values.size else 1, dtype=np.int32)
    for v in values:
        lut[int(v)] = table[int(v)]
    return lut[labels]


def to_coarse(labels: np.ndarray) -> np.ndarray:
    """uint8 medgen coarse label map (`medgen.layout.labels.label_table`) of a MAISI-id label map.

    Raises ValueError for ids that are neither MAISI's nor medgen's (`MEDGEN_IDS`)."""
    return _lookup(labels, MAISI_TO_COARSE, "a MAISI").astype(np.uint8)


def from_coarse(labels: np.ndarray, fallback: dict[str, int] | None = None) -> np.ndarray:
    """uint8 MAISI-id label map of a medgen coarse label map (lesion values -> ``lung tumor``).

    ``bone`` and ``mediastinum`` have no single MAISI id; they raise ValueError unless ``fallback`` names a
    MAISI id for them, e.g. ``{"bone": MAISI_LABELS["vertebrae T6"], "mediastinum": MAISI_LABELS["heart"]}``."""
    table = dict(COARSE_TO_MAISI)
    for name, value in (fallback or {}).items():
        if name not in AMBIGUOUS_COARSE:
            raise ValueError(f"fallback names `bone` or `mediastinum`, got {name!r}")
        if int(value) not in MAISI_TO_COARSE:
            raise ValueError(f"fallback id {value} for {name} is not a MAISI id")
        table[AMBIGUOUS_COARSE[name]] = int(value)
    labels = np.asarray(labels)
    missing = sorted(n for n, v in AMBIGUOUS_COARSE.items() if v not in table and np.any(labels == v))
    if missing:
        raise ValueError(f"coarse label(s) {missing} have no single MAISI id; pass fallback={{name: maisi_id}}")
    return _lookup(labels, table, "a coarse").astype(np.uint8)


def is_maisi_label_map(labels: np.ndarray) -> bool:
    """True when every value of ``labels`` is 0, a MAISI id or a medgen id."""
    return all(int(v) in MAISI_TO_COARSE for v in np.unique(np.asarray(labels)))
