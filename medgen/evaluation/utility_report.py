"""Downstream utility benchmark, the summary side: per-arm means and spreads over training seeds, paired
differences against arm a, the issue's bars, the markdown table and the bar plot (`medgen.evaluation.utility`
trains and scores the runs)."""

from __future__ import annotations

import numpy as np

ARMS = {"a": "N real", "b": "N real + 4N layout-grounded", "c": "4N layout-grounded only",
        "d": "N real + 4N text-only (analyzer-confirmed labels)"}


def aggregate_arms(runs: dict, seeds) -> dict:
    """Mean and spread (sample std over seeds) of every figure per arm; paired differences against arm a."""
    def figures(scores):
        out = {"lesion_dice": scores["lesion_dice"], "effusion_dice": scores["effusion_dice"]}
        for band, d in scores["detection"].items():
            out[f"f1_{band}"] = d["f1"]
        return out

    arms = {}
    for arm in ARMS:
        per_seed = [figures(runs[(arm, s)]) for s in seeds if (arm, s) in runs]
        if not per_seed:
            continue
        arms[arm] = {"label": ARMS[arm], "n_seeds": len(per_seed), "per_seed": per_seed}
        for key in per_seed[0]:
            values = [f[key] for f in per_seed if f[key] is not None]
            arms[arm][key] = {"mean": float(np.mean(values)) if values else None,
                              "spread": float(np.std(values, ddof=1)) if len(values) > 1 else None}
        if arm != "a" and "a" in arms:
            for key in ("lesion_dice", "f1_8-15mm"):
                diffs = [f[key] - g[key] for f, g in zip(per_seed, arms["a"]["per_seed"], strict=False)
                         if f[key] is not None and g[key] is not None]
                arms[arm][f"{key}_minus_a"] = {"mean": float(np.mean(diffs)) if diffs else None,
                                               "spread": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None}
    return arms


def utility_bars(arms: dict) -> dict:
    """The issue's bars: (b) - (a) >= 3 Dice points and above its spread; (b) beats (a) in 8-15 mm F1;
    (c) reaches 80 % of (a)'s Dice."""
    def get(arm, key, part="mean"):
        return (arms.get(arm, {}).get(key) or {}).get(part)

    diff, spread = get("b", "lesion_dice_minus_a"), get("b", "lesion_dice_minus_a", "spread")
    f1_diff, f1_spread = get("b", "f1_8-15mm_minus_a"), get("b", "f1_8-15mm_minus_a", "spread")
    a_dice, c_dice = get("a", "lesion_dice"), get("c", "lesion_dice")
    return {
        "b_minus_a_dice_points": {"value": None if diff is None else 100 * diff, "target": ">= 3 and > spread",
                                  "pass": diff is not None and diff >= 0.03 and spread is not None and diff > spread},
        "b_minus_a_f1_8_15mm": {"value": f1_diff, "target": "> 0 and > spread",
                                "pass": f1_diff is not None and f1_diff > 0 and f1_spread is not None
                                and f1_diff > f1_spread},
        "c_over_a_dice": {"value": None if not a_dice or c_dice is None else c_dice / a_dice, "target": ">= 0.8",
                          "pass": bool(a_dice and c_dice is not None and c_dice / a_dice >= 0.8)},
    }


def utility_markdown(results: dict, command: str) -> str:
    s = results["settings"]
    lines = ["# Downstream utility: does generated data train a better lesion segmenter?", "",
             f"Command: `{command}` ({results['elapsed_s'] / 60:.0f} min on {results.get('hardware', 'this machine')}). "
             "MONAI SegResNet "
             f"(init {s['init_filters']} filters, lung + soft-tissue window channels), Dice + class-weighted "
             f"cross-entropy, {s['steps']} steps of batch {s['batch_size']} {s['roi']}³ crops centred on background / "
             f"lesion / effusion 1:2:1, same in every arm; {s['n_real']} real phantoms (N), "
             f"{s['n_real'] * s['synthetic_per_real']} generated volumes, tested on {s['n_test']} held-out real "
             f"phantoms (subject seeds from {s['test_seed']}), {s['shape']}³ at {s['spacing']:g} mm; mean ± spread "
             f"(std) over training seeds {list(s['seeds'])}.", "",
             "| arm | training data | lesion Dice | effusion Dice | F1 8-15 mm | F1 15-30 mm | F1 > 30 mm |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for arm, row in results["arms"].items():
        cells = [_pm(row.get(k)) for k in ("lesion_dice", "effusion_dice", "f1_8-15mm", "f1_15-30mm", "f1_>30mm")]
        lines.append(f"| {arm} | {row['label']} | " + " | ".join(cells) + " |")
    if results.get("labelled_fraction_ablation") is not None:
        lines += ["", f"Arm d keeps a generated finding's label only where the analyzer confirms it; "
                  f"{100 * results['labelled_fraction_ablation']:.0f} % of its volumes carry any label."]
    lines += ["", "| bar | target | measured | pass |", "| --- | --- | --- | --- |"]
    for name, bar in results["bars"].items():
        value = "-" if bar["value"] is None else f"{bar['value']:.3f}"
        lines.append(f"| {name} | {bar['target']} | {value} | {'yes' if bar['pass'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def _pm(cell) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    spread = "" if cell.get("spread") is None else f" ± {cell['spread']:.3f}"
    return f"{cell['mean']:.3f}{spread}"


def plot_utility(results: dict, path) -> None:
    from medgen.errors import require_extra

    require_extra("matplotlib", "eval").use("Agg")
    import matplotlib.pyplot as plt

    arms = list(results["arms"])
    keys = ("lesion_dice", "effusion_dice", "f1_8-15mm")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        means = [(results["arms"][a].get(key) or {}).get("mean") or 0.0 for a in arms]
        spreads = [(results["arms"][a].get(key) or {}).get("spread") or 0.0 for a in arms]
        ax.bar(np.arange(len(arms)) + k * width, means, width, yerr=spreads, label=key, capsize=3)
    ax.set_xticks(np.arange(len(arms)) + width * (len(keys) - 1) / 2, [f"({a})" for a in arms])
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("segmenter on held-out real phantoms, by training arm")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
