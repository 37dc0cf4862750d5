"""Validate `medgen.analysis.analyze_volume` on procedural phantoms where the truth is known.

Builds N phantoms with random findings (`sample_findings`), analyzes each volume from its HU alone,
compares with the truth (`compare_findings`) and writes per-attribute accuracy:

    .venv/bin/python docs/studies/validate_analyzer.py --n 200 --shape 64 --spacing 5 --seed 17 \
        --check-shape 128 --check-spacing 2.5 --check-n 3

Outputs docs/studies/analyzer_accuracy.md (tables, targets, calibrated thresholds) and
docs/studies/analyzer_accuracy.json (summary and every per-case comparison).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from medgen.analysis import analyze_volume, compare_findings, density_calibration
from medgen.analysis import findings as F
from medgen.analysis import lesions as L
from medgen.phantom.chest import make_phantom, sample_findings

SIZE_BINS = ((0, 15), (15, 20), (20, 30), (30, 1000))
TUNING_SEEDS = (5, 7, 11, 13)  # seeds whose failures were studied while setting thresholds
# (key in the summary, target, text) - the acceptance targets of the analyzer
TARGETS = (
    ("lesion_side", 0.98, "lesion side (matched lesions)"),
    ("lesion_zone", 0.85, "lesion zone (matched lesions)"),
    ("lesion_lobe", 0.85, "lesion lobe (matched lesions)"),
    ("size_within_30pct_ge20", 0.90, "diameter within ±30 % (matched, true >= 20 mm)"),
    ("density_class_ge15", 0.85, "density class from mean HU (matched, true >= 15 mm)"),
    ("effusion_side", 0.95, "effusion side (true effusions; a miss counts as wrong)"),
    ("emphysema_grade", 0.90, "emphysema grade (true emphysema; a miss counts as wrong)"),
    ("normal_specificity", 0.95, "normal specificity (true normal analysed normal)"),
)


def run_case(index: int, seed: int, shape: int, spacing: float) -> dict:
    rng = np.random.default_rng([seed, index])
    truth = sample_findings(rng)
    case = make_phantom(truth, shape=shape, spacing=spacing, seed=seed * 100_000 + index)
    t0 = time.perf_counter()
    analysis = analyze_volume(case.image)
    seconds = time.perf_counter() - t0
    return {"index": index, "seconds": seconds, "truth": case.findings.to_dict(), "analysis": analysis.to_dict(),
            "compare": compare_findings(case.findings, analysis)}


def _rate(flags) -> dict:
    flags = [bool(f) for f in flags]
    return {"value": (sum(flags) / len(flags)) if flags else None, "n": len(flags)}


def summarize(records: list[dict]) -> dict:
    """Aggregate per-case comparisons into the accuracy table (each entry: value and its denominator)."""
    matches = [m for r in records for m in r["compare"]["lesions"]["matches"]]
    truths = [(k, i, les) for k, r in enumerate(records) for i, les in enumerate(r["truth"]["lesions"])]
    matched = {(k, m["truth_index"]) for k, r in enumerate(records) for m in r["compare"]["lesions"]["matches"]}
    out = {
        "cases": len(records),
        "lesion_side": _rate(m["side_ok"] for m in matches),
        "lesion_zone": _rate(m["zone_ok"] for m in matches),
        "lesion_lobe": _rate(m["lobe_ok"] for m in matches),
        "size_within_30pct_ge20": _rate(abs(m["size_rel_error"]) <= 0.3 for m in matches
                                        if m["truth_diameter_mm"] >= 20),
        "size_median_abs_rel_error_ge20": float(np.median([abs(m["size_rel_error"]) for m in matches
                                                           if m["truth_diameter_mm"] >= 20] or [np.nan])),
        "density_class_ge15": _rate(m["density_class_ok"] for m in matches if m["truth_diameter_mm"] >= 15),
        "density_class_core_ge15": _rate(m["density_class_core_ok"] for m in matches if m["truth_diameter_mm"] >= 15),
        "lesion_recall": _rate((k, i) in matched for k, i, _ in truths),
        "lesion_precision": _rate(i < len(r["compare"]["lesions"]["matches"]) for r in records
                                  for i in range(r["compare"]["lesions"]["n_measured"])),
        "false_positive_lesions_per_case": sum(len(r["compare"]["lesions"]["false_positives"]) for r in records)
        / max(len(records), 1),
    }
    for lo, hi in SIZE_BINS:
        out[f"lesion_recall_{lo}_{hi if hi < 1000 else 'up'}mm"] = _rate(
            (k, i) in matched for k, i, les in truths if lo <= les["diameter_mm"] < hi)
    ge15 = [m for m in matches if m["truth_diameter_mm"] >= 15]
    if len(ge15) >= 2:
        cal = density_calibration([m["truth_density"] for m in ge15], [m["measured_mean_hu"] for m in ge15])
        out["density_calibration_ge15"] = {k: cal[k] for k in ("n", "spearman_rho", "mae_hu", "bias_hu", "class_accuracy")}
    eff = [r["compare"]["effusion"] for r in records]
    out["effusion_side"] = _rate(e["side_ok"] is True for e in eff if e["truth_side"])
    out["effusion_grade"] = _rate(e["grade_ok"] is True for e in eff if e["truth_side"])
    out["effusion_sensitivity"] = _rate(e["measured_side"] is not None for e in eff if e["truth_side"])
    out["effusion_specificity"] = _rate(e["measured_side"] is None for e in eff if not e["truth_side"])
    emph = [r["compare"]["emphysema"] for r in records]
    out["emphysema_grade"] = _rate(e["exact_ok"] for e in emph if e["truth_grade"])
    out["emphysema_sensitivity"] = _rate(e["measured_grade"] is not None for e in emph if e["truth_grade"])
    out["emphysema_specificity"] = _rate(e["measured_grade"] is None for e in emph if not e["truth_grade"])
    out["normal_specificity"] = _rate(r["compare"]["normal"]["measured"] for r in records
                                      if r["compare"]["normal"]["truth"])
    # calibration ranges: measured LAA-950 % by true emphysema grade (min / median / max)
    for grade in ("none", "mild", "moderate", "severe"):
        v = [r["analysis"]["lung_pct_below_950"] for r in records
             if (r["truth"]["emphysema"] or {}).get("grade", "none") == grade]
        if v:
            out[f"laa950_pct_{grade}"] = {"min": float(np.min(v)), "median": float(np.median(v)),
                                          "max": float(np.max(v)), "n": len(v)}
    secs = [r["seconds"] for r in records]
    out["analyze_seconds_mean"], out["analyze_seconds_max"] = float(np.mean(secs)), float(np.max(secs))
    return out


def thresholds() -> dict:
    """The phantom-calibrated constants of the analyzer, written beside the numbers they produce."""
    return {"emphysema_LAA950_pct": dict((g, t) for g, t in F.EMPHYSEMA_THRESHOLDS),
            "effusion_fluid_fraction": dict((g, t) for g, t in F.EFFUSION_THRESHOLDS),
            "fluid_hu_band": F.FLUID_HU, "ggo_delta_hu": L.GGO_DELTA_HU, "solid_hu": L.SOLID_HU,
            "lesion_rules": [dict(zip(("kind", "min_volume_ml", "min_compact", "max_elong", "max_shell", "max_shell2"), r, strict=True))
                             for r in L.RULES]}


def _fmt(entry) -> str:
    if isinstance(entry, dict):
        return "n/a (n=0)" if entry["value"] is None else f"{100 * entry['value']:.1f} % (n={entry['n']})"
    return f"{entry:.3f}" if isinstance(entry, float) else str(entry)


def write_markdown(path: Path, summary: dict, check: dict | None, args) -> None:
    lines = ["# Finding analyzer accuracy on procedural phantoms", "",
             f"Generated by `docs/studies/validate_analyzer.py --n {args.n} --shape {args.shape} --spacing {args.spacing}"
             f" --seed {args.seed}` ({platform.python_version()}, {time.strftime('%Y-%m-%d')}). The analyzer sees only the"
             " HU volume and its affine; truth comes from the phantom's findings. Lesions are matched to the truth by"
             " centre distance (Hungarian, within max(15 mm, 0.75 x true diameter)).", "",
             f"## Targets ({args.shape}^3 voxels, {args.spacing} mm)", "", "| attribute | target | measured | pass |",
             "|---|---|---|---|"]
    for key, target, text in TARGETS:
        e = summary[key]
        ok = e["value"] is not None and e["value"] >= target
        lines.append(f"| {text} | {100 * target:.0f} % | {_fmt(e)} | {'yes' if ok else '**no**'} |")
    lines += ["", "## Detection and other measurements", "", "| quantity | value |", "|---|---|"]
    for key, value in summary.items():
        if key in {k for k, _, _ in TARGETS} or key == "cases":
            continue
        if isinstance(value, dict) and "value" not in value:
            value = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
        lines.append(f"| {key} | {_fmt(value)} |")
    if check:
        lines += ["", f"## Resolution check ({check['shape']}^3, {check['spacing']} mm, {check['summary']['cases']} cases)",
                  "", "| case | truth | analysis | seconds |", "|---|---|---|---|"]
        for r in check["records"]:
            t = r["truth"]
            tl = "; ".join(f"{x['lobe']} {x['diameter_mm']} mm d={x['density']}" for x in t["lesions"]) or "-"
            al = "; ".join(f"{x['lobe']} {x['diameter_mm']} mm {x['mean_hu']} HU" for x in r["analysis"]["lesions"]) or "-"
            te = f"eff={t['effusion']['side'] + ' ' + t['effusion']['grade'] if t['effusion'] else '-'}"
            ae = r["analysis"]["effusion"]
            ae = f"eff={ae['side'] + ' ' + ae['grade'] if ae else '-'}"
            tm = f"emph={t['emphysema']['grade'] if t['emphysema'] else '-'}"
            am = f"emph={r['analysis']['emphysema_grade'] or '-'}"
            lines.append(f"| {r['index']} | {tl}; {te}; {tm} | {al}; {ae}; {am} | {r['seconds']:.2f} |")
    th = thresholds()
    lines += ["", "## Calibrated thresholds (medgen/analysis/findings.py, lesions.py)", "",
              f"- emphysema grade from % of aerated lung below -950 HU: {th['emphysema_LAA950_pct']}",
              f"- effusion grade from fluid / (fluid + aerated cavity) per side: {th['effusion_fluid_fraction']};"
              f" fluid band {th['fluid_hu_band']} HU after tissue-only smoothing",
              f"- lesion thresholds: lung median + {th['ggo_delta_hu']} HU (ground glass), {th['solid_hu']} HU (solid)",
              "- lesion acceptance rules (kind, min volume ml, min compactness, max elongation, max shell fractions):",
              *[f"  - {tuple(r.values())}" for r in th["lesion_rules"]], "",
              "Tuning: thresholds were set on ~320 phantoms built outside this script (random findings, and targeted",
              "effusion/emphysema cases); failure modes were then studied on this script's `--seed` 5, 7, 11 and 13.",
              f"The numbers above come from `--seed {args.seed}`"
              + (", which was never used while tuning." if args.seed not in TUNING_SEEDS else " (a tuning seed)."), "",
              "Known limits: at 5 mm voxels lesions under ~15 mm are indistinguishable from vessel partial volume",
              "and are rarely detected (see recall by size); ground-glass lesions touching vessels or the hilum can be",
              "rejected by the shape rules; the fluid segmentation captures about 60 % of the phantom's fluid, so",
              "the effusion grade thresholds are set on that measured fraction.", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--shape", type=int, default=64)
    p.add_argument("--spacing", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--check-shape", type=int, default=128)
    p.add_argument("--check-spacing", type=float, default=2.5)
    p.add_argument("--check-n", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "analyzer_accuracy")
    args = p.parse_args(argv)
    if args.n < 1:
        raise SystemExit(f"--n must be >= 1, got {args.n}")
    records = []
    for i in range(args.n):
        records.append(run_case(i, args.seed, args.shape, args.spacing))
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{args.n} cases", file=sys.stderr, flush=True)
    summary = summarize(records)
    check = None
    if args.check_n > 0:
        crec = [run_case(10_000 + i, args.seed, args.check_shape, args.check_spacing) for i in range(args.check_n)]
        check = {"shape": args.check_shape, "spacing": args.check_spacing, "summary": summarize(crec), "records": crec}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out.with_suffix(".md"), summary, check, args)
    payload = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "summary": summary, "thresholds": thresholds(), "check": check, "records": records}
    args.out.with_suffix(".json").write_text(json.dumps(payload, separators=(",", ":"), default=float))
    for key, target, text in TARGETS:
        print(f"{text:60s} {_fmt(summary[key]):>22s}  target {100 * target:.0f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
