"""medgen.evaluation: report fidelity, density calibration, realism/diversity, alignment, speed.

`run_evaluation(model_dir, out_dir, quick=...)` runs every section and writes ``results.json``,
``summary.md`` and PNG plots (see evaluation/README.md).  Heavy imports happen on first use.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "run_evaluation": "medgen.evaluation.suite",
    "EvalSettings": "medgen.evaluation.suite",
    "QUICK": "medgen.evaluation.suite",
    "EvalCase": "medgen.evaluation.fidelity",
    "make_heldout_cases": "medgen.evaluation.fidelity",
    "score_fidelity": "medgen.evaluation.fidelity",
    "PipelineGenerator": "medgen.evaluation.fidelity",
    "PhantomOracle": "medgen.evaluation.fidelity",
    "score_calibration": "medgen.evaluation.calibration",
    "AlignmentModel": "medgen.evaluation.alignment",
    "train_alignment": "medgen.evaluation.alignment",
    "volume_retrieval_metrics": "medgen.evaluation.alignment",
    "benchmark_speed": "medgen.evaluation.speed",
    "write_outputs": "medgen.evaluation.report",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgen.evaluation' has no attribute {name!r}")
