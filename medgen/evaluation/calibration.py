"""Density calibration: the same reports at d = 0, 0.25, 0.5, 0.75, 1; measured lesion HU vs -750 + 800 d.

Every lesion of a report gets the requested density (the control is "the attenuation of the focal
lesions the report describes"), so the measured value is the mean HU of the largest lesion the
analyzer finds in the volume (the most reliable measurement; small lesions suffer partial volume).
A volume in which the analyzer finds no lesion counts as a miss: it is reported
(``detected_fraction``) and left out of rho / MAE, never imputed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from medgen.evaluation.fidelity import EvalCase
from medgen.volume import density_to_hu

__all__ = ["DENSITY_GRID", "largest_lesion", "largest_lesion_hu", "score_calibration", "select_calibration_cases"]

DENSITY_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def largest_lesion(analysis):
    """The largest (by diameter) measured lesion of an `Analysis`, or None when none was found."""
    lesions = list(getattr(analysis, "lesions", None) or [])
    return max(lesions, key=lambda lesion: float(lesion.diameter_mm)) if lesions else None


def largest_lesion_hu(analysis) -> float | None:
    """Mean HU of the largest lesion in an `Analysis` (None when none was found)."""
    largest = largest_lesion(analysis)
    if largest is None:
        return None
    value = float(largest.mean_hu)
    return value if np.isfinite(value) else None


def select_calibration_cases(cases: Sequence[EvalCase], n: int, *, min_diameter_mm: float = 25.0
                             ) -> list[EvalCase]:
    """The first `n` cases whose largest lesion is >= `min_diameter_mm` (fewer if not enough exist)."""
    chosen = [c for c in cases if c.findings.lesions
              and max(lesion.diameter_mm for lesion in c.findings.lesions) >= min_diameter_mm]
    return chosen[: int(n)]


def score_calibration(cases: Sequence[EvalCase], generate: Callable, seeds: Sequence[int], *,
                      densities: Sequence[float] = DENSITY_GRID, analyze: Callable | None = None,
                      calibrate: Callable | None = None, progress: bool = False) -> dict:
    """Generate each case at each density and seed (one batch per case and seed), measure lesion HU.

    Args:
        cases: lesion-bearing cases (see `select_calibration_cases`).
        generate: ``generate(reports, seed=, density=[...]) -> list[Volume]``.
        seeds: noise seeds.
        densities: requested d values.
        analyze, calibrate: default `medgen.analysis.analyze_volume` / `density_calibration`.
        progress: show a tqdm bar (volumes generated).

    Returns:
        dict with the per-volume ``points`` (case, seed, d, target_hu, measured_hu), ``per_density``
        (mean / sd of measured HU, detection rate), the `density_calibration` figures on detected
        lesions, ``n_generated`` and ``detected_fraction``.
    """
    if analyze is None or calibrate is None:
        from medgen.analysis import analyze_volume, density_calibration

        analyze, calibrate = analyze or analyze_volume, calibrate or density_calibration
    if not cases:
        raise ValueError("density calibration needs at least one case with a lesion")
    densities = [float(d) for d in densities]
    points = []
    bar = tqdm(total=len(cases) * len(seeds) * len(densities), desc="calibration", unit="volume",
               disable=not progress)
    for case in cases:
        for seed in seeds:
            volumes = generate([case.report] * len(densities), seed=int(seed), density=densities)
            bar.update(len(volumes))
            for d, volume in zip(densities, volumes, strict=True):
                points.append({"case": case.index, "seed": int(seed), "d": d, "target_hu": density_to_hu(d),
                               "measured_hu": largest_lesion_hu(analyze(volume))})
    bar.close()
    found = [p for p in points if p["measured_hu"] is not None]
    per_density = {}
    for d in densities:
        values = [p["measured_hu"] for p in found if p["d"] == d]
        per_density[f"{d:g}"] = {
            "target_hu": density_to_hu(d),
            "measured_mean_hu": float(np.mean(values)) if values else None,
            "measured_sd_hu": float(np.std(values)) if values else None,
            "detected": len(values),
            "n": sum(p["d"] == d for p in points),
        }
    figures = dict(calibrate([p["d"] for p in found], [p["measured_hu"] for p in found])) if len(found) >= 2 else {}
    return {
        "n_reports": len(cases),
        "n_seeds": len(seeds),
        "densities": densities,
        "n_generated": len(points),
        "detected_fraction": len(found) / len(points),
        **{k: v for k, v in figures.items() if not isinstance(v, (list, tuple, np.ndarray))},
        "per_density": per_density,
        "points": points,
    }
