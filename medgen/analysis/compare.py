"""Compare analyzed findings with ground-truth `Findings`, attribute by attribute.

Lesions are paired by the Hungarian algorithm: on centre distance (within `match_radius_mm`) when every
true lesion has a centre (phantoms), else on attributes (side, lobe, size) for findings parsed from a
report, which carry no position.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from medgen.analysis.findings import Analysis
from medgen.findings import Findings
from medgen.volume import density_class, hu_to_density

MATCH_MIN_MM = 15.0  # a measured centre must lie within max(15 mm, 0.75 x true diameter) of the true centre


def match_radius_mm(diameter_mm: float) -> float:
    return max(MATCH_MIN_MM, 0.75 * float(diameter_mm))


def _pairs(truth, measured) -> tuple[str, list[tuple[int, int, float | None]]]:
    if not truth or not measured:
        return ("distance" if all(t.center_mm is not None for t in truth) else "attributes"), []
    if all(t.center_mm is not None for t in truth):
        dist = np.array([[float(np.linalg.norm(np.subtract(t.center_mm, m.center_mm))) for m in measured]
                         for t in truth])
        allowed = dist <= np.array([match_radius_mm(t.diameter_mm) for t in truth])[:, None]
        cost = np.where(allowed, dist, 1e6)
        rows, cols = linear_sum_assignment(cost)
        return "distance", [(int(r), int(c), float(dist[r, c])) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]
    # no positions: prefer the same side, then the same lobe, then the closest size
    cost = np.array([[10.0 * (t.side != m.side) + 3.0 * (t.lobe != m.lobe)
                      + abs(np.log(max(m.diameter_mm, 1e-3) / t.diameter_mm)) for m in measured] for t in truth])
    rows, cols = linear_sum_assignment(cost)
    return "attributes", [(int(r), int(c), None) for r, c in zip(rows, cols, strict=True)]


def compare_findings(truth: Findings, analysis: Analysis) -> dict:
    """Per-attribute agreement of `analysis` with `truth`.

    Returns:
        ``{"lesions": {"matching", "n_truth", "n_measured", "n_matched", "matches": [...], "missed": [...],
        "false_positives": [...]}, "effusion": {...}, "emphysema": {...}, "normal": {...}}``. Each match holds
        the truth and measured values and ``side_ok``, ``zone_ok``, ``lobe_ok``, ``size_rel_error``
        (measured / true diameter - 1), ``density_class_ok`` (class of the measured mean HU) and
        ``density_class_core_ok`` (class of the core HU). Fields that do not apply are None.
    """
    if not isinstance(truth, Findings):
        raise TypeError(f"`truth` must be medgen.findings.Findings, got {type(truth).__name__}")
    if not isinstance(analysis, Analysis):
        raise TypeError(f"`analysis` must be medgen.analysis.Analysis, got {type(analysis).__name__}")
    mode, pairs = _pairs(truth.lesions, analysis.lesions)
    matches = []
    for ti, mi, dist in pairs:
        t, m = truth.lesions[ti], analysis.lesions[mi]
        true_class = density_class(t.density)
        matches.append({
            "truth_index": ti, "measured_index": mi, "distance_mm": dist,
            "truth_lobe": t.lobe, "measured_lobe": m.lobe, "side_ok": t.side == m.side, "zone_ok": t.zone == m.zone,
            "lobe_ok": t.lobe == m.lobe,
            "truth_diameter_mm": float(t.diameter_mm), "measured_diameter_mm": float(m.diameter_mm),
            "size_rel_error": float(m.diameter_mm / t.diameter_mm - 1.0),
            "truth_density": float(t.density), "measured_mean_hu": float(m.mean_hu), "measured_core_hu": float(m.core_hu),
            "measured_density": hu_to_density(m.mean_hu), "truth_density_class": true_class,
            "measured_density_class": density_class(hu_to_density(m.mean_hu)),
            "density_class_ok": density_class(hu_to_density(m.mean_hu)) == true_class,
            "density_class_core_ok": density_class(hu_to_density(m.core_hu)) == true_class,
        })
    matched_t = {p[0] for p in pairs}
    matched_m = {p[1] for p in pairs}
    lesions = {
        "matching": mode, "n_truth": len(truth.lesions), "n_measured": len(analysis.lesions), "n_matched": len(pairs),
        "matches": matches,
        "missed": [{"truth_index": i, "lobe": t.lobe, "diameter_mm": float(t.diameter_mm), "density": float(t.density)}
                   for i, t in enumerate(truth.lesions) if i not in matched_t],
        "false_positives": [{"measured_index": i, "lobe": m.lobe, "diameter_mm": float(m.diameter_mm)}
                            for i, m in enumerate(analysis.lesions) if i not in matched_m],
    }
    te, me = truth.effusion, analysis.effusion
    both = te is not None and me is not None
    effusion = {"truth_side": te.side if te else None, "truth_grade": te.grade if te else None,
                "measured_side": me.side if me else None, "measured_grade": me.grade if me else None,
                "presence_ok": (te is None) == (me is None),
                "side_ok": (te.side == me.side) if both else None, "grade_ok": (te.grade == me.grade) if both else None}
    tg = truth.emphysema.grade if truth.emphysema else None
    mg = analysis.emphysema_grade
    emphysema = {"truth_grade": tg, "measured_grade": mg, "presence_ok": (tg is None) == (mg is None),
                 "grade_ok": (tg == mg) if (tg and mg) else None, "exact_ok": tg == mg}
    normal = {"truth": truth.is_normal, "measured": analysis.is_normal, "ok": truth.is_normal == analysis.is_normal}
    return {"lesions": lesions, "effusion": effusion, "emphysema": emphysema, "normal": normal}
