"""Does the evaluation's CLIP-style alignment model generalise? Train it on 100 real phantom subjects, then
retrieve among 40 held-out real subjects (held-out and train phrasing) and among 40 of its training subjects.

    .venv/bin/python evaluation/diagnose_alignment.py      # ~9 min on 2 CPU cores; results: evaluation/alignment_generalization.md
"""
import time

import numpy as np

from medgen.data.reports import write_report
from medgen.evaluation import alignment as align
from medgen.evaluation.fidelity import make_heldout_cases
from medgen.evaluation.suite import EvalSettings, _alignment_pairs
from medgen.pipelines import ReportToVolumePipeline

pipe = ReportToVolumePipeline.from_pretrained("medgen/assets/default-model")
s = EvalSettings(); s.n_train_alignment = 100
vols, reps, finds, _ = _alignment_pairs(s, (64,)*3, (5.,)*3, None)
cases = make_heldout_cases(40, shape=(64,)*3, spacing=(5.,)*3, seed=2024)
rng = np.random.default_rng(0)
train_phr = [write_report(c.findings, language=c.language, rng=rng).text for c in cases]
def evaluate(model, tag):
    img = model.embed_images([c.real for c in cases])
    for name, texts in (("heldout phrasing", [c.report for c in cases]), ("train phrasing", train_phr)):
        t = model.embed_text(align.pooled_text(pipe.text_encoder, texts)).detach()
        r = align.retrieval_metrics(t, img); print(tag, name, "top1 %.3f top5 %.3f rank %.1f / %d" % (r["top1"], r["top5"], r["mean_rank"], r["n_candidates"]))
    t = model.embed_text(align.pooled_text(pipe.text_encoder, [r[0] for r in reps[:40]])).detach()
    r = align.retrieval_metrics(t, model.embed_images(vols[:40])); print(tag, "TRAIN subjects", "top1 %.3f top5 %.3f rank %.1f" % (r["top1"], r["top5"], r["mean_rank"]))
for kw in ({}, {"lr": 5e-4, "steps": 800}):
    t0 = time.time()
    model, hist = align.train_alignment(pipe.text_encoder, vols, reps, finds, **({"steps": 400} | kw))
    print(kw, hist["loss_first"], hist["loss_last"], "%.0f s" % (time.time() - t0))
    evaluate(model, str(kw))
