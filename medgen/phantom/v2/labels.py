"""Label ids and tissue classes of phantom v2.

Every structure the phantom draws is labelled with the id of its name in MAISI's CT label dictionary
(`medgen.maisi_labels`). No MAISI id is written here: `label_id` looks names up. Pleural effusion and
emphysema take medgen's own ids, outside MAISI's range (`MEDGEN_EFFUSION_ID` / `MEDGEN_EMPHYSEMA_ID`).

Structures with no MAISI name carry the label of what surrounds them: the pulmonary trunk and the central
pulmonary arteries (MAISI has no pulmonary-artery label) and the intervertebral discs are ``body``; the
intrapulmonary arteries and small veins are part of their lobe (as lobe masks include them).
"""

from __future__ import annotations

from medgen.maisi_labels import MAISI_LABELS, MEDGEN_EFFUSION_ID, MEDGEN_EMPHYSEMA_ID

VERTEBRAE = ("C7", *(f"T{i}" for i in range(1, 13)), "L1", "L2")
LOBE_NAMES = {"right_upper": "right lung upper lobe", "right_middle": "right lung middle lobe",
              "right_lower": "right lung lower lobe", "left_upper": "left lung upper lobe",
              "left_lower": "left lung lower lobe"}


def label_id(name: str) -> int:
    """MAISI id of a label-dictionary name (``"heart"``, ``"vertebrae T5"``, ``"left rib 3"``), or medgen's id
    for ``"pleural effusion"`` / ``"emphysema"``."""
    if name == "pleural effusion":
        return MEDGEN_EFFUSION_ID
    if name == "emphysema":
        return MEDGEN_EMPHYSEMA_ID
    try:
        return MAISI_LABELS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in MAISI's label dictionary") from None


def rib_id(side: int, number: int) -> int:
    """Id of rib `number` (1..12) on `side` (+1 right, -1 left)."""
    return label_id(f"{'right' if side > 0 else 'left'} rib {number}")


def vertebra_id(level: str) -> int:
    return label_id(f"vertebrae {level}")


BACKGROUND = 0
BODY = label_id("body")
LOBE_IDS = {lobe: label_id(name) for lobe, name in LOBE_NAMES.items()}
LUNG_IDS = tuple(LOBE_IDS.values())
TUMOR = label_id("lung tumor")
AIRWAY = label_id("airway")
EFFUSION = label_id("pleural effusion")
EMPHYSEMA = label_id("emphysema")

# Every name the phantom may write (tests check each against the dictionary file).
DRAWN_NAMES = (
    "body", *LOBE_NAMES.values(), "lung tumor", "trachea", "airway", "heart", "left atrial appendage", "aorta",
    "superior vena cava", "inferior vena cava", "pulmonary vein", "brachiocephalic trunk",
    "left brachiocephalic vein", "right brachiocephalic vein", "left common carotid artery",
    "right common carotid artery", "left subclavian artery", "right subclavian artery", "esophagus",
    "thyroid gland", "spinal cord", *(f"vertebrae {v}" for v in VERTEBRAE),
    *(f"{s} rib {i}" for s in ("left", "right") for i in range(1, 13)), "costal cartilages", "sternum",
    "left clavicula", "right clavicula", "left scapula", "right scapula", "left autochthon", "right autochthon",
    "liver", "stomach", "spleen", "right kidney", "left kidney", "left iliopsoas", "right iliopsoas",
)

# Tissue classes: per-subject mean HU drawn from these ranges (non-contrast CT).
TISSUE_HU = {
    "air": (-1000, -1000), "fat": (-110, -90), "muscle": (40, 55), "myocardium": (42, 55), "blood": (36, 46),
    "lung": (-928, -905), "emphysema": (-940, -925), "emphysema_cluster": (-990, -975), "liver": (54, 64),
    "spleen": (44, 52), "kidney": (30, 40), "gastric": (10, 25), "gas": (-1000, -990), "cartilage": (90, 130),
    "trabecular": (200, 320), "cortical": (900, 1150), "disc": (70, 95), "csf": (4, 12), "cord": (30, 40),
    "thyroid": (85, 110), "effusion": (6, 14), "gland": (25, 40), "soft": (32, 45), "lesion": (0, 0),
}
TISSUES = {name: code for code, name in enumerate(TISSUE_HU)}
