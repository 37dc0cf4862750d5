"""Write an evaluation's results: ``results.json`` (every figure), ``summary.md`` (tables), PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from medgen.io.atomic import atomic_path

__all__ = ["jsonable", "write_outputs"]


def jsonable(value):
    """Results -> strict JSON types: numpy scalars to Python, non-finite floats to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _fidelity_md(fid: dict) -> list[str]:
    langs = sorted(fid.get("by_language", {}))
    lines = ["## 1. Report fidelity (held-out phrasing)\n",
             f"{fid['n_reports']} reports ({', '.join(f'{k}: {v}' for k, v in fid['languages'].items())}) × "
             f"{fid['n_seeds']} seeds = {fid['n_generated']} volumes; {fid['n_normal_cases']} normal cases. "
             "Each row is the mean over the volumes where the attribute applies (n).\n"]
    rows = []
    for key, stat in fid["overall"].items():
        rows.append([key, stat["mean"], stat["n"], *[fid["by_language"][g].get(key, {}).get("mean") for g in langs]])
    return lines + _table(["attribute", "overall", "n", *langs], rows)


def _calibration_md(cal: dict) -> list[str]:
    lines = ["## 2. Density calibration\n",
             f"{cal['n_reports']} reports × {len(cal['densities'])} densities × {cal['n_seeds']} seeds = "
             f"{cal['n_generated']} volumes; a lesion was found in {cal['detected_fraction']:.0%}.\n"]
    figures = {k: v for k, v in cal.items() if isinstance(v, (int, float)) and k not in ("n_reports", "n_seeds",
                                                                                         "n_generated")}
    lines += _table(["figure", "value"], [[k, v] for k, v in figures.items()])
    rows = [[d, s["target_hu"], s["measured_mean_hu"], s["measured_sd_hu"], f"{s['detected']}/{s['n']}"]
            for d, s in cal["per_density"].items()]
    return lines + _table(["d", "target HU", "measured mean HU", "sd", "detected"], rows)


def _realism_md(rea: dict) -> list[str]:
    lines = ["## 3. Realism and diversity\n",
             "Distances after standardising over all sets; *real vs real* = the same findings on other "
             "subjects (what a perfect generator would score).\n"]
    rows = []
    for name, f in rea["features"].items():
        rows.append([name, f["mmd"], f.get("mmd_real_vs_real"), f["frechet"], f.get("frechet_real_vs_real"),
                     f["n_real"]])
    lines += _table(["features", "MMD gen", "MMD real", "Fréchet gen", "Fréchet real", "n"], rows)
    d = {k: v["mean"] if isinstance(v, dict) else v for k, v in rea["diversity"].items()}
    lines += _table(["MS-SSIM (mean)", "generated", "real"],
                    [["same report / same findings", d["generated_same_report"], d["real_same_findings"]],
                     ["different subjects", d["generated_different_reports"], d["real_different_subjects"]]])
    lines.append(f"Collapse ratio (generated / real, same report): {_fmt(d['collapse_ratio'])} "
                 "(≫ 1 means samples of one report are near copies).\n")
    return lines


def _alignment_md(ali: dict) -> list[str]:
    t = ali["training"]
    lines = ["## 4. Report–volume alignment (CLIP-style model trained on real phantom pairs)\n",
             f"Trained on {t['n_subjects']} real subjects / {t['n_reports']} reports, {t['steps']} steps "
             f"(loss {t['loss_first']:.3g} → {t['loss_last']:.3g}).\n"]
    rows = [[name, r["top1"], r["top5"], r["chance_top1"], r["chance_top5"], r["mean_rank"], r["n_candidates"]]
            for name, r in ali["retrieval"].items()]
    return lines + _table(["volumes", "top-1", "top-5", "chance top-1", "chance top-5", "mean rank", "N"], rows)


def _speed_md(spd: dict) -> list[str]:
    if "shapes" not in spd:  # a layout-grounded model: the whole call timed
        return [f"## 5. Speed ({spd['device']}, {spd['torch_threads']} threads)\n",
                f"Report -> CT + labels: {spd['seconds_per_volume']} s per volume (median); {spd['note']}.\n"]
    lines = [f"## 5. Speed and memory ({spd['device']}, {spd['torch_threads']} threads, median of "
             f"{spd['repeats']})\n"]
    rows = []
    for side, r in spd["shapes"].items():
        if "error" in r:
            rows.append([f"{side}³", r["error"], "", "", "", "", ""])
            continue
        for name in ("guided", "text_guided", "unguided"):
            s = r[name]
            rows.append([f"{side}³ {name}", s["encode_text_s"], s["denoise_s"], s["decode_s"], s["write_s"],
                         s["total_s"], max(s[k] for k in s if k.endswith("_mb"))])
    lines += _table(["run", "encode s", "denoise s", "decode s", "write s", "total s", "peak MB"], rows)
    rows = [[f"{side}³", r["monai_stock"]["denoise_decode_s"], r["monai_stock_cfg"]["denoise_decode_s"],
             *r["ratio_vs_monai"].values()] for side, r in spd["shapes"].items() if "ratio_vs_monai" in r]
    return lines + _table(["grid", "MONAI stock s", "MONAI stock+cfg s", "ours unguided / stock",
                           "ours text-guided / stock cfg", "ours guided / stock"], rows)


def _plots(results: dict, out_dir: Path) -> list[str]:
    from medgen.errors import require_extra

    if not any(results.get(k) for k in ("fidelity", "calibration", "realism", "speed")):
        return []  # nothing to plot (a reader-only run): matplotlib is not needed

    require_extra("matplotlib", "eval").use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name):
        with atomic_path(out_dir / name) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        written.append(name)

    fid = results.get("fidelity")
    if fid:
        keys = list(fid["overall"])
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(keys)), 4))
        width = 0.8 / (1 + len(fid["by_language"]))
        for j, (label, stats) in enumerate([("overall", fid["overall"]), *fid["by_language"].items()]):
            ax.bar(np.arange(len(keys)) + j * width, [stats.get(k, {}).get("mean", np.nan) for k in keys], width,
                   label=label)
        ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys, rotation=60, ha="right", fontsize=7)
        ax.set_title("Report fidelity (held-out phrasing)")
        ax.legend()
        save(fig, "fidelity.png")
    cal = results.get("calibration")
    if cal:
        fig, ax = plt.subplots(figsize=(5, 4))
        pts = [p for p in cal["points"] if p["measured_hu"] is not None]
        ax.scatter([p["target_hu"] for p in pts], [p["measured_hu"] for p in pts], s=12, alpha=0.6, label="volumes")
        lo, hi = -800, 150
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="target mapping")
        ax.set_xlabel("target lesion HU (−750 + 800 d)")
        ax.set_ylabel("measured lesion HU")
        ax.set_title(f"Density calibration (ρ = {_fmt(cal.get('spearman_rho'))})")
        ax.legend()
        save(fig, "calibration.png")
    rea = results.get("realism")
    if rea:
        fig, ax = plt.subplots(figsize=(5, 4))
        d = rea["diversity"]
        labels = ["gen same report", "real same findings", "real diff. subjects"]
        vals = [d[k] or {"mean": np.nan, "sd": 0.0}
                for k in ("generated_same_report", "real_same_findings", "real_different_subjects")]
        ax.bar(labels, [v["mean"] for v in vals], yerr=[v["sd"] for v in vals], color=["C1", "C0", "C0"])
        ax.set_ylim(0, 1)
        ax.set_ylabel("MS-SSIM")
        ax.set_title("Diversity")
        save(fig, "diversity.png")
    spd = results.get("speed")
    if spd and "shapes" in spd:
        fig, ax = plt.subplots(figsize=(6, 4))
        runs = [(f"{s}³ {n}", r[n]) for s, r in spd["shapes"].items() if "error" not in r
                for n in ("guided", "text_guided", "unguided")]
        bottom = np.zeros(len(runs))
        for stage in ("encode_text", "denoise", "decode", "write"):
            vals = np.asarray([r[f"{stage}_s"] for _, r in runs])
            ax.bar([name for name, _ in runs], vals, bottom=bottom, label=stage)
            bottom += vals
        ax.set_ylabel("seconds per volume")
        ax.tick_params(axis="x", rotation=30)
        ax.legend()
        ax.set_title(f"Time per stage ({spd['device']})")
        save(fig, "speed.png")
    return written


def write_outputs(results: dict, out_dir) -> dict[str, Path]:
    """Write results.json, summary.md and the plots into `out_dir`; returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(results, out_dir)
    results.setdefault("meta", {})["plots"] = plots
    clean = jsonable(results)
    with atomic_path(out_dir / "results.json") as tmp:
        Path(tmp).write_text(json.dumps(clean, indent=1, ensure_ascii=False, allow_nan=False))
    meta = results["meta"]
    run = ("report reader only" if meta.get("reader_only") else
           f"grid {meta.get('shape')} at {meta.get('spacing')} mm, {meta.get('num_inference_steps')} steps")
    sha = f" (sha256 {meta['model_sha256'][:12]}…)" if meta.get("model_sha256") else ""
    lines = [f"# medgen evaluation: {meta.get('model_name', '')}\n",
             f"Model `{meta.get('model_dir')}`{sha}, "
             f"{'quick' if meta.get('quick') else 'full'} run on {meta.get('device')}, {run}, "
             f"medgen {meta.get('medgen_version')}, {meta.get('elapsed_s', 0):.0f} s.\n",
             "Every figure is in `results.json`; how each is computed: `evaluation/README.md`.\n"]
    if "bars" in results:
        lines += ["## Bars\n", "Calibration bar: lesions >= "
                  f"{_fmt(results.get('calibration', {}).get('min_lesion_diameter_mm'))} mm in this run.\n"]
        lines += _table(["figure", "bar", "measured", "pass"],
                        [[k, b["bar"], b["value"], {True: "yes", False: "**no**", None: "–"}[b["pass"]]]
                         for k, b in results["bars"].items()])
    if "reader" in results:
        from medgen.evaluation.reading import reader_markdown

        lines += reader_markdown(results["reader"])
    sections = (("fidelity", _fidelity_md), ("calibration", _calibration_md), ("realism", _realism_md),
                ("alignment", _alignment_md), ("speed", _speed_md))
    for key, render in sections:
        if key in results:
            lines += render(results[key])
    if "second_opinion" in results:
        from medgen.evaluation.second_opinion import second_opinion_markdown

        lines += second_opinion_markdown(results["second_opinion"])
    lines += [f"![{p}]({p})\n" for p in plots]
    with atomic_path(out_dir / "summary.md") as tmp:
        Path(tmp).write_text("\n".join(lines), encoding="utf-8")
    return {"results": out_dir / "results.json", "summary": out_dir / "summary.md",
            **{p: out_dir / p for p in plots}}
