"""The slice reader as a second scorer (issue 11): held-out reports -> the embedded 3D default -> volumes, each
read by the HU analyzer and by the LLaVA-style slice reader (`medgen describe`), both scored against the
report and against each other (`medgen.evaluation.second_opinion`). The same section runs inside
`medgen evaluate` when the model folder has a slice reader; this script measures it alone.

    .venv/bin/python benchmarks/bench_second_opinion.py --n 40     # -> benchmarks/results/second_opinion/
    .venv/bin/python benchmarks/bench_second_opinion.py --quick    # smoke run (2 reports)
"""

from __future__ import annotations

from pathlib import Path

import harness

from medgen.evaluation.fidelity import PipelineGenerator, make_heldout_cases
from medgen.evaluation.second_opinion import second_opinion, second_opinion_markdown
from medgen.pipelines import ReportToVolumePipeline
from medgen.pipelines.default_model import default_model_path
from medgen.slices.describer.model import SliceReader


def main() -> None:
    parser = harness.parser("second_opinion", __doc__)
    parser.add_argument("--model", type=Path, default=default_model_path(), help="3D pipeline folder")
    parser.add_argument("--reader", type=Path, default=None, help="slice reader (default: MODEL/slice_reader)")
    parser.add_argument("--n", type=int, default=40)
    args = harness.parse(parser, quick={"n": 2})
    pipe = ReportToVolumePipeline.from_pretrained(args.model)
    shape, spacing = tuple(pipe.config["shape"]), tuple(pipe.config["spacing"])
    cases = make_heldout_cases(args.n, shape=shape, spacing=spacing)
    generate = PipelineGenerator(pipe)
    generated = {}
    for start in range(0, len(cases), 4):
        batch = cases[start:start + 4]
        for case, volume in zip(batch, generate([c.report for c in batch], seed=0), strict=True):
            generated[(case.index, 0)] = volume
    reader = SliceReader.from_pretrained(args.reader or args.model / "slice_reader")
    result = second_opinion(reader, cases, generated)
    lines = ["# Second opinion on generated volumes", "",
             f"Produced by `benchmarks/bench_second_opinion.py --n {args.n}` (3D model `{args.model}`, held-out "
             "reports of `medgen evaluate`'s case generator, seed 0).", "", *second_opinion_markdown(result)[2:]]
    harness.write_json(args.out, result)
    harness.write_summary(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
