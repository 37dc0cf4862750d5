"""Does the evaluation's CLIP-style alignment model generalise? Train it on 100 real phantom subjects, then
retrieve among 40 held-out real subjects (held-out and train phrasing) and among 40 of its training subjects.

    .venv/bin/python docs/studies/diagnose_alignment.py   # ~9 min on 2 CPU cores; prints the figures of
                                                          # docs/studies/alignment_generalization.md
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from medgen.evaluation import alignment as align
from medgen.evaluation.fidelity import make_heldout_cases
from medgen.evaluation.suite import EvalSettings, _alignment_pairs
from medgen.pipelines import ReportToVolumePipeline
from medgen.pipelines.default_model import default_model_path
from medgen.reports.writer import write_report

SHAPE, SPACING = (64, 64, 64), (5.0, 5.0, 5.0)
VARIANTS = ({"steps": 400}, {"lr": 5e-4, "steps": 800})  # the evaluation's default, and a lower learning rate


def retrieval(model, text_encoder, reports, volumes) -> str:
    text = model.embed_text(align.pooled_text(text_encoder, reports)).detach()
    r = align.retrieval_metrics(text, model.embed_images(volumes))
    return f"top-1 {r['top1']:.3f} / top-5 {r['top5']:.3f} / mean rank {r['mean_rank']:.1f} of {r['n_candidates']}"


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    pipe = ReportToVolumePipeline.from_pretrained(default_model_path())
    settings = EvalSettings(n_train_alignment=100)
    volumes, reports, findings, _ = _alignment_pairs(settings, SHAPE, SPACING, None)
    cases = make_heldout_cases(40, shape=SHAPE, spacing=SPACING, seed=2024)
    rng = np.random.default_rng(0)
    train_phrasing = [write_report(c.findings, language=c.language, rng=rng).text for c in cases]
    real = [c.real for c in cases]
    for kwargs in VARIANTS:
        start = time.perf_counter()
        model, history = align.train_alignment(pipe.text_encoder, volumes, reports, findings, **kwargs)
        print(f"{kwargs}: loss {history['loss_first']:.2f} -> {history['loss_last']:.2f}, "
              f"{time.perf_counter() - start:.0f} s")
        print("  held-out subjects, held-out phrasing:", retrieval(model, pipe.text_encoder, [c.report for c in cases], real))
        print("  held-out subjects, train phrasing:   ", retrieval(model, pipe.text_encoder, train_phrasing, real))
        print("  training subjects:                   ",
              retrieval(model, pipe.text_encoder, [r[0] for r in reports[:40]], volumes[:40]))


if __name__ == "__main__":
    main()
