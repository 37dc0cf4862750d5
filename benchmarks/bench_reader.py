"""Time per report of the report reader (`medgen read`, issue 25 bar: <= 20 ms per report on the CPU), one report
per call as the generation pipeline reads them: the combined reader (learned tagger + rules), each of its readers
alone and the evaluation's rule parser, interleaved round by round over the same reports (held-out writer reports
in English and Chinese, and the hand-written reports), so that load from other processes hits them alike.

    .venv/bin/python benchmarks/bench_reader.py              # -> benchmarks/results/reader/
    .venv/bin/python benchmarks/bench_reader.py --quick      # smoke run (a few reports, one round)
"""

from __future__ import annotations

import time

import harness
import numpy as np

from medgen.evaluation.reading import HANDWRITTEN_SETS, load_handwritten
from medgen.io.weights import quiet_transformers
from medgen.pipelines.default_model import default_model_path
from medgen.reader import ReportReader
from medgen.reader.corpus import make_examples
from medgen.reports.rule_parser import parse_report


def _per_report(fn, texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        start = time.perf_counter()
        fn(text)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = harness.parser("reader", __doc__)
    parser.add_argument("--n", type=int, default=50, help="held-out writer reports per language")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds over all reports")
    args = harness.parse(parser, quick={"n": 3, "rounds": 1})
    with quiet_transformers():
        reader = ReportReader.from_pretrained(default_model_path() / "reader")
    texts = [ex.text for language in ("en", "zh")
             for ex in make_examples(args.n, split="heldout", seed=4249, languages=(language,))]
    hand = [h.text for truth, _ in HANDWRITTEN_SETS.values() for h in load_handwritten(truth_file=truth)]
    texts += hand if not args.quick else hand[:4]
    readers = {"combined (tagger + rules)": lambda t: reader.read(t),
               "tagger alone": lambda t: reader.read(t, mode="tagger"),
               "rules alone": lambda t: reader.read(t, mode="rules"),
               "rule parser (evaluation baseline)": parse_report}
    for fn in readers.values():  # warm-up: imports, spaCy, compiled patterns
        fn(texts[0])
    runs: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(args.rounds):
        for name, fn in readers.items():
            runs[name] += _per_report(fn, texts)
    rows, results = [], {"reports": len(texts), "rounds": args.rounds, "machine": harness.machine(), "readers": {}}
    for name, seconds in runs.items():
        ms = np.array(seconds) * 1000.0
        per_round = ms.reshape(args.rounds, len(texts)).mean(1)
        figures = {"mean_ms": float(np.median(per_round)), "p50_ms": float(np.percentile(ms, 50)),
                   "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max())}
        results["readers"][name] = figures
        rows.append([name, *(f"{figures[k]:.2f}" for k in ("mean_ms", "p50_ms", "p95_ms", "max_ms"))])
    bar = results["readers"]["combined (tagger + rules)"]["mean_ms"]
    lines = ["# Report reader: time per report", "",
             f"`{harness.command_line()}` on {harness.machine()}.", "",
             f"{len(texts)} reports ({args.n} held-out writer reports per language and the hand-written ones), "
             f"one per call, {args.rounds} interleaved round(s); mean = median over rounds of the mean per report.",
             "", harness.markdown_table(["reader", "mean ms", "p50 ms", "p95 ms", "max ms"], rows, "lrrrr"), "",
             f"Bar (issue 25): combined reader <= 20 ms per report: {bar:.2f} ms, "
             f"{'met' if bar <= 20 else 'NOT met'}.", ""]
    harness.write_summary(args.out, "\n".join(lines))
    harness.write_json(args.out, results)


if __name__ == "__main__":
    main()
