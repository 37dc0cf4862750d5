"""What a model adds that no report asked for, and what the lung-field constraint takes back.

Normal held-out reports (EN and ZH, held-out phrasing families) are generated with the constraint off; each volume
is then passed through every constraint setting (`medgen.render.lung_field`, applied to the same decoded HU with the
same layout, so the rows differ only by the constraint) and analyzed by the finding analyzer (`medgen.analysis`).
A volume is clean when the analyzer finds no lesion >= 10 mm, no effusion and no emphysema. The same settings are
applied to volumes of reports *with* findings: the "asked lesions kept" row counts the reported lesions >= 15 mm the
analyzer still finds within reach of their layout centre, so a setting that wipes out asked findings shows.

    .venv/bin/python docs/studies/unasked_findings.py --model DIR --n 20 --seeds 0 1 \
        --reference data/phantom-v2-64/manifest.jsonl --out docs/studies/unasked_findings.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from medgen.analysis import analyze_volume
from medgen.evaluation.fidelity import layout_centroids
from medgen.findings import Findings
from medgen.phantom.chest import sample_findings
from medgen.pipelines import ReportToVolumePipeline
from medgen.pipelines.default_model import resolve_model_path
from medgen.render.lung_field import reference_quantiles_from_manifest, remove_unasked_structure
from medgen.reports.writer import write_report
from medgen.volume import Volume

# (name, constraint kwargs or None)
SETTINGS = (("off", None), ("ball 7.5 mm", {"radius_mm": 7.5}), ("ball 5 mm", {"radius_mm": 5.0}),
            ("ball 5 mm + dark", {"radius_mm": 5.0, "dark": True}),
            ("ball 5 mm, tolerance 40 HU", {"radius_mm": 5.0, "tolerance_hu": 40.0}))
# with --reference: the same balls, then the field mapped onto normal lung's HU distribution
MATCHED = (("ball 7.5 mm + normal-lung histogram", {"radius_mm": 7.5}),
           ("ball 5 mm + normal-lung histogram", {"radius_mm": 5.0}))


def findings_of(volume: Volume) -> dict:
    a = analyze_volume(volume)
    lesions = [les for les in a.lesions if les.diameter_mm >= 10.0]
    return {"lesions": lesions, "effusion": a.effusion is not None, "emphysema": a.emphysema_grade is not None}


def constrained(result, spacing, kwargs) -> Volume:
    hu = np.asarray(result.volume.array, np.float32)
    if kwargs is not None:
        hu = remove_unasked_structure(hu, np.asarray(result.labels.array), spacing, **kwargs)
    return Volume(hu, result.volume.affine)


def reports(n: int, normal: bool, seed0: int) -> list[tuple[str, Findings]]:
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed0, i])
        findings = Findings() if normal else sample_findings(rng, p_normal=0.0)
        out.append((write_report(findings, language=("en", "zh")[i % 2], rng=rng, split="heldout").text, findings))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="pipeline folder (default: the embedded model)")
    ap.add_argument("--n", type=int, default=20, help="reports of each kind (normal, with findings)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", type=Path, required=True, help="markdown; the JSON goes beside it")
    ap.add_argument("--reference", type=Path, default=None,
                    help="manifest of training subjects (image + layout) whose normal lung field gives the quantiles")
    ap.add_argument("--reference-n", type=int, default=60, help="train rows of --reference used")
    args = ap.parse_args()
    settings = list(SETTINGS)
    if args.reference is not None:
        quantiles = reference_quantiles_from_manifest(args.reference, args.reference_n)
        settings += [(name, {**kw, "quantiles": quantiles}) for name, kw in MATCHED]
    pipe = ReportToVolumePipeline.from_pretrained(resolve_model_path(args.model))
    pipe.config["lung_field"] = pipe.config["lung_field_radius_mm"] = None
    spacing = tuple(pipe.config["spacing"])
    started = time.time()
    normal = {name: {"clean": 0, "lesion": 0, "effusion": 0, "emphysema": 0, "n": 0} for name, _ in settings}
    kept = {name: [0, 0] for name, _ in settings}
    for kind, cases in (("normal", reports(args.n, True, 8_801)), ("findings", reports(args.n, False, 8_802))):
        for text, findings in cases:
            for seed in args.seeds:
                result = pipe(text, findings=findings, seed=seed, progress=False)
                centres = layout_centroids(result.labels) if kind == "findings" else []
                for name, kwargs in settings:
                    found = findings_of(constrained(result, spacing, kwargs))
                    if kind == "normal":
                        row = normal[name]
                        row["n"] += 1
                        row["lesion"] += bool(found["lesions"])
                        row["effusion"] += found["effusion"]
                        row["emphysema"] += found["emphysema"]
                        row["clean"] += not (found["lesions"] or found["effusion"] or found["emphysema"])
                        continue
                    for lesion, centre in zip(findings.lesions, centres, strict=False):
                        if lesion.diameter_mm < 15.0 or centre is None:
                            continue
                        reach = max(15.0, 0.75 * lesion.diameter_mm)
                        kept[name][1] += 1
                        kept[name][0] += any(np.linalg.norm(np.asarray(les.center_mm) - np.asarray(centre)) <= reach
                                             for les in found["lesions"])
    minutes = (time.time() - started) / 60
    lines = ["# Unasked findings and the lung-field constraint", "",
             f"Command: `.venv/bin/python docs/studies/unasked_findings.py --model {args.model or 'default'} "
             f"--n {args.n} --seeds {' '.join(map(str, args.seeds))}"
             f"{' --reference ' + str(args.reference) if args.reference else ''}` ({minutes:.0f} min). {args.n} normal and "
             f"{args.n} lesion-bearing held-out reports (EN/ZH alternating) x {len(args.seeds)} seeds; the rows apply "
             "each constraint setting to the same decoded volumes.", "",
             "| constraint | normal volumes clean | with a lesion >= 10 mm | with an effusion | with emphysema | "
             "asked lesions >= 15 mm still found |", "| --- | --- | --- | --- | --- | --- |"]
    for name, _ in settings:
        r, (k, t) = normal[name], kept[name]
        lines.append(f"| {name} | {r['clean']}/{r['n']} | {r['lesion']} | {r['effusion']} | {r['emphysema']} | "
                     f"{k}/{t} |")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"normal": normal, "kept": kept, "minutes": minutes},
                                                        indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
