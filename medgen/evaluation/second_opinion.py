"""A second scorer of generated volumes: the LLaVA-style slice reader (`medgen describe`) beside the HU
analyzer (`medgen.analysis.analyze_volume`), each against the report's truth, and their agreement.

Compared per volume, on what both can say: a lesion at all, the largest lesion's side (the reader's side
against the sides of every lesion the analyzer found, and against the truth's lesion sides), the effusion side
(None = no effusion). The reader reads `n_slices` lung-level axial slices (no label map: it sees what the
HU analyzer sees).
"""

from __future__ import annotations

import numpy as np


def second_opinion(reader, cases, generated: dict, *, n_slices: int = 6, limit: int | None = None) -> dict:
    """Rates (0-1) over the generated volumes {(case index, seed): Volume} of the first seed.

    Returns {"n", "reader_vs_truth": {...}, "analyzer_vs_truth": {...}, "agreement": {...}} with keys
    "lesion", "side" (volumes where both sides are defined) and "effusion".
    """
    from medgen.analysis import analyze_volume
    from medgen.slices.describer.describe import describe_volume

    first_seed = min(seed for _, seed in generated)
    keys = sorted(k for k in generated if k[1] == first_seed)[:limit]
    rows = []
    for index, seed in keys:
        volume, truth = generated[(index, seed)], cases[index].findings
        analysis = analyze_volume(volume)
        said = describe_volume(reader, volume, n_slices=n_slices).summary
        reader_lesion = said["lesion"]
        truth_sides = {lesion.lobe.split("_")[0] for lesion in truth.lesions}
        analyzer_sides = {lesion.side for lesion in analysis.lesions}
        truth_effusion = truth.effusion.side if truth.effusion else None
        analyzer_effusion = analysis.effusion.side if analysis.effusion else None
        rows.append({
            "reader_vs_truth": {"lesion": (reader_lesion is not None) == bool(truth.lesions),
                                "side": None if not (reader_lesion and truth_sides) else reader_lesion["side"] in truth_sides,
                                "effusion": said["effusion"] == truth_effusion},
            "analyzer_vs_truth": {"lesion": bool(analysis.lesions) == bool(truth.lesions),
                                  "side": None if not (analyzer_sides and truth_sides)
                                  else bool(analyzer_sides & truth_sides),
                                  "effusion": analyzer_effusion == truth_effusion},
            "agreement": {"lesion": (reader_lesion is not None) == bool(analysis.lesions),
                          "side": None if not (reader_lesion and analyzer_sides)
                          else reader_lesion["side"] in analyzer_sides,
                          "effusion": said["effusion"] == analyzer_effusion},
        })
    out = {"n": len(rows), "n_slices": n_slices, "seed": first_seed}
    for group in ("reader_vs_truth", "analyzer_vs_truth", "agreement"):
        out[group] = {}
        for key in ("lesion", "side", "effusion"):
            values = [r[group][key] for r in rows if r[group][key] is not None]
            out[group][key] = float(np.mean(values)) if values else None
            out[group][f"n_{key}"] = len(values)
    return out


def second_opinion_markdown(result: dict) -> list[str]:
    lines = ["## Second opinion: slice reader beside the HU analyzer", "",
             f"{result['n']} generated volumes (seed {result['seed']}), {result['n_slices']} lung-level axial slices "
             "each read by the LLaVA-style slice reader.", "",
             "| | lesion present | lesion side | effusion side |", "| --- | --- | --- | --- |"]
    names = {"reader_vs_truth": "slice reader vs report", "analyzer_vs_truth": "HU analyzer vs report",
             "agreement": "reader vs analyzer (agreement)"}
    for group, name in names.items():
        row = result[group]
        cells = [f"{100 * row[k]:.0f} % (n={row['n_' + k]})" if row[k] is not None else "–"
                 for k in ("lesion", "side", "effusion")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]
