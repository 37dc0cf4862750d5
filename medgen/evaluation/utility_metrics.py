"""Metrics of the downstream utility benchmark: Dice and lesion-level detection by size band.

Classes of the segmentation task: 0 background, 1 lesion, 2 pleural effusion. A true lesion (one id of the
phantom's lesion-id map) is detected when a predicted lesion component overlaps it; a predicted component that
overlaps no true lesion is a false positive, banded by its own equivalent diameter.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

LESION, EFFUSION = 1, 2
SIZE_BANDS = (("8-15mm", 8.0, 15.0), ("15-30mm", 15.0, 30.0), (">30mm", 30.0, float("inf")))


def dice(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """Dice of two bool masks; None when both are empty (the class is absent and was not predicted)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = int(pred.sum() + truth.sum())
    return None if total == 0 else 2.0 * float((pred & truth).sum()) / total


def band_of(diameter_mm: float) -> str | None:
    """The size band of a lesion diameter (None below the smallest band)."""
    return next((name for name, lo, hi in SIZE_BANDS if lo <= diameter_mm < hi), None)


def equivalent_diameter_mm(n_voxels: int, spacing) -> float:
    volume = n_voxels * float(np.prod(spacing))
    return 2.0 * (3.0 * volume / (4.0 * np.pi)) ** (1.0 / 3.0)


def detection_counts(pred_lesion: np.ndarray, truth_ids: np.ndarray, truth_diameters: dict[int, float],
                     spacing) -> dict[str, dict[str, int]]:
    """Per size band: true positives, false negatives (true lesions) and false positives (predicted components).

    Args:
        pred_lesion: bool mask of predicted lesion voxels.
        truth_ids: int map, 0 = no lesion, i = true lesion i.
        truth_diameters: true diameter (mm) of each lesion id (decides its band).
        spacing: voxel size (mm) for the band of a false-positive component.
    """
    counts = {name: {"tp": 0, "fn": 0, "fp": 0} for name, _, _ in SIZE_BANDS}
    components, n = ndi.label(np.asarray(pred_lesion, bool))
    for lesion_id, diameter in truth_diameters.items():
        band = band_of(diameter)
        if band is None:
            continue
        hit = bool(((truth_ids == lesion_id) & (components > 0)).any())
        counts[band]["tp" if hit else "fn"] += 1
    if n:
        sizes = ndi.sum_labels(np.ones_like(components), components, index=np.arange(1, n + 1))
        overlaps = ndi.maximum((truth_ids > 0).astype(np.uint8), components, index=np.arange(1, n + 1))
        for size, overlap in zip(sizes, overlaps, strict=True):
            band = band_of(equivalent_diameter_mm(int(size), spacing))
            if not overlap and band is not None:
                counts[band]["fp"] += 1
    return counts


def add_counts(total: dict, counts: dict) -> dict:
    for band, c in counts.items():
        for key, value in c.items():
            total.setdefault(band, {"tp": 0, "fn": 0, "fp": 0})[key] += value
    return total


def f1_scores(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, float | None]]:
    """Precision, recall and F1 = 2TP / (2TP + FP + FN) per band (None where undefined)."""
    out = {}
    for band, c in counts.items():
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        out[band] = {"precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
                     "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None, **c}
    return out


def score_volume(pred: np.ndarray, truth: np.ndarray, truth_ids: np.ndarray, truth_diameters: dict[int, float],
                 spacing) -> dict:
    """One held-out volume: lesion and effusion Dice, detection counts (class maps 0/1/2)."""
    return {"lesion_dice": dice(pred == LESION, truth == LESION),
            "effusion_dice": dice(pred == EFFUSION, truth == EFFUSION),
            "detection": detection_counts(pred == LESION, truth_ids, truth_diameters, spacing)}


def summarise_scores(rows: list[dict]) -> dict:
    """Mean Dice over the volumes where the class is present or predicted; F1 per band from summed counts."""
    def mean(key):
        values = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(values)) if values else None

    counts: dict = {}
    for r in rows:
        add_counts(counts, r["detection"])
    return {"lesion_dice": mean("lesion_dice"), "effusion_dice": mean("effusion_dice"),
            "detection": f1_scores(counts), "n_volumes": len(rows)}
