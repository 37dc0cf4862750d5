"""Density calibration: does measured lesion HU follow the requested density control?

``d`` in [0, 1] asks for a mean lesion HU of ``density_to_hu(d) = -750 + 800 d`` (`medgen.volume`). Given the
requested densities and the mean HU the analyzer measured on the generated lesions, report rank
agreement (Spearman rho), mean absolute error in HU, bias, density-class agreement and per-target
statistics.
"""

from __future__ import annotations

import numpy as np

from medgen.volume import density_class, density_to_hu, hu_to_density


def density_calibration(targets_d, measured_hu) -> dict:
    """Calibration statistics of measured lesion HU against target densities.

    Args:
        targets_d: requested densities, each in [0, 1].
        measured_hu: measured mean lesion HU, same length.

    Returns:
        dict with ``n``, ``spearman_rho`` (None when fewer than 2 points or a constant input),
        ``mae_hu``, ``bias_hu`` (measured - target), ``class_accuracy`` and ``per_target``:
        ``{"0.15": {"n", "target_hu", "mean_hu", "std_hu", "mean_density"}, ...}``.
    """
    d = np.asarray(list(targets_d), dtype=float)
    hu = np.asarray(list(measured_hu), dtype=float)
    if d.ndim != 1 or hu.ndim != 1 or d.size != hu.size:
        raise ValueError(f"`targets_d` and `measured_hu` must be 1D of equal length, got {d.shape} and {hu.shape}")
    if d.size == 0:
        raise ValueError("`targets_d` is empty: need at least one (target, measurement) pair")
    if not (np.isfinite(d).all() and np.isfinite(hu).all()):
        raise ValueError("`targets_d` and `measured_hu` must be finite")
    if d.min() < 0 or d.max() > 1:
        raise ValueError(f"`targets_d` must be in [0, 1], got values in [{d.min()}, {d.max()}]")
    target_hu = np.array([density_to_hu(v) for v in d])
    err = hu - target_hu
    rho = None
    if d.size >= 2 and np.ptp(d) > 0 and np.ptp(hu) > 0:
        from scipy.stats import spearmanr

        rho = float(spearmanr(d, hu).statistic)
    classes_ok = [density_class(t) == density_class(hu_to_density(m)) for t, m in zip(d, hu, strict=True)]
    per_target = {}
    for value in np.unique(np.round(d, 3)):
        sel = np.round(d, 3) == value
        per_target[f"{value:g}"] = {
            "n": int(sel.sum()), "target_hu": round(density_to_hu(value), 1),
            "mean_hu": round(float(hu[sel].mean()), 1), "std_hu": round(float(hu[sel].std()), 1),
            "mean_density": round(float(np.mean([hu_to_density(v) for v in hu[sel]])), 3),
        }
    return {"n": int(d.size), "spearman_rho": rho, "mae_hu": float(np.abs(err).mean()),
            "bias_hu": float(err.mean()), "class_accuracy": float(np.mean(classes_ok)), "per_target": per_target}
