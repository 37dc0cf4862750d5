"""Regenerate reports/*.txt and reports/examples.jsonl: `python reports/make_examples.py` from the repository root.

Each case pins its findings, family and seed, so the files only change when the writer's wording changes.
"""
import json
from pathlib import Path

import numpy as np

from medgen.findings import Effusion, Emphysema, Findings, Lesion
from medgen.reports.writer import write_report

CASES = [  # (name, findings, EN family, ZH family)
    ("ground_glass_nodule", Findings([Lesion("right_upper", 9, 0.12, "smooth")]), "en.sectioned", "zh.standard"),
    ("part_solid_nodule", Findings([Lesion("left_upper", 16, 0.5, "lobulated")]), "en.narrative", "zh.bracketed"),
    ("solid_mass_effusion", Findings([Lesion("right_lower", 42, 0.92, "spiculated")], Effusion("right", "small")),
     "en.organ_headers", "zh.windows"),
    ("effusion", Findings(effusion=Effusion("bilateral", "moderate")), "en.technique_first", "zh.narrative"),
    ("emphysema", Findings(emphysema=Emphysema("severe", True)), "en.terse", "zh.terse"),
    ("normal", Findings(), "en.sectioned", "zh.standard"),
    ("solid_nodules_emphysema", Findings([Lesion("right_middle", 12, 0.88, "smooth"),
                                          Lesion("left_lower", 8, 0.95, "smooth")], emphysema=Emphysema("mild")),
     "en.measurement_first", "zh.listed"),
    ("part_solid_mass_effusion", Findings([Lesion("left_lower", 34, 0.45, "lobulated")], Effusion("left", "large")),
     "en.key_value", "zh.key_value"),
]

out = Path("reports")
rows = []
for i, (name, findings, en_family, zh_family) in enumerate(CASES, 1):
    for language, family in (("en", en_family), ("zh", zh_family)):
        report = write_report(findings, language=language, rng=np.random.default_rng(100 + i), family=family)
        stem = f"{language}_{i:02d}_{name}"
        (out / f"{stem}.txt").write_text(report.text + "\n", encoding="utf-8")
        density = findings.mean_lesion_density
        rows.append({"id": stem, "language": language, "report": report.text,
                     "density": None if density is None else round(density, 2)})
rows.sort(key=lambda row: (row["language"], row["id"]))
(out / "examples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
