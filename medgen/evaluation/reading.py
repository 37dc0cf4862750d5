"""Reader section of `medgen evaluate`: the report reader against the rule parser (baseline) on reports of the
held-out phrasing families (per language) and on the hand-written reports shipped in `medgen/evaluation/handwritten`
(the first 39, `truth.jsonl`; the reports written in other people's styles, `truth_wild.jsonl`; and all of them
together), plus the reader's time per report on this machine.

The rule parser (`medgen.reports.rule_parser`) is imported here, in evaluation only; the generation path
never imports it (tests/test_reader.py checks).
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from medgen.findings import Findings
from medgen.reader.corpus import make_examples
from medgen.reader.scoring import LESION_ATTRIBUTES, REPORT_ATTRIBUTES, compare, read_findings, score_reader

# Package data (installed with medgen), so that a non-editable install reads them too.
HANDWRITTEN_DIR = Path(str(resources.files("medgen.evaluation") / "handwritten"))
BAR_ATTRIBUTES = ("presence", "side", "lobe", "type", "effusion_side", "effusion_grade", "emphysema", "normal")
# hand-written sets: result key -> (truth file, table label)
HANDWRITTEN_SETS = {"handwritten": ("truth.jsonl", "hand-written"),
                    "handwritten_wild": ("truth_wild.jsonl", "hand-written new")}


@dataclass
class HandwrittenExample:
    text: str
    findings: Findings
    language: str
    family: str  # the file stem


def load_handwritten(folder=HANDWRITTEN_DIR, truth_file: str = "truth.jsonl") -> list[HandwrittenExample]:
    """The hand-written reports and their truth (`truth_file`: one JSON line per report, id, language, findings)."""
    folder = Path(folder)
    truth = folder / truth_file
    if not truth.is_file():
        raise FileNotFoundError(f"no hand-written reports: {truth} is missing (a broken install?)")
    out = []
    for line in truth.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            text = (folder / f"{row['id']}.txt").read_text(encoding="utf-8").strip()
            out.append(HandwrittenExample(text, Findings.from_dict(row["findings"]), row["language"], row["id"]))
    return out


def _rule_parser():
    from medgen.reports.rule_parser import parse_report

    return lambda texts: [parse_report(t) for t in texts]


def _per_report_ms(fn, texts: list[str], repeats: int = 3) -> float:
    """Median over `repeats` of the mean wall time per report, one report per call (a warm-up call first)."""
    fn(texts[:1])
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for text in texts:
            fn([text])
        runs.append((time.perf_counter() - t0) / len(texts))
    return float(np.median(runs) * 1000.0)


def evaluate_reader(reader, *, n_per_language: int = 200, seed: int = 4242, handwritten_dir=HANDWRITTEN_DIR,
                    timing_reports: int = 50) -> dict:
    """Score `reader` (tagger and rules combined), each of its two readers alone when it has the `mode` option
    ("tagger": the learned reader without the rules; "rules") and the rule parser; returns a JSON-able dict
    (see `reader_markdown`)."""
    readers = {"reader": reader.read_batch}
    if "mode" in inspect.signature(reader.read_batch).parameters:
        readers.update(tagger=functools.partial(reader.read_batch, mode="tagger"),
                       rules=functools.partial(reader.read_batch, mode="rules"))
    readers["rule_parser"] = _rule_parser()
    out: dict = {"heldout": {}, "handwritten": {}, "n_per_language": n_per_language}
    for language in ("en", "zh"):
        examples = make_examples(n_per_language, split="heldout", seed=seed + (language == "zh"),
                                 languages=(language,))
        for name, fn in readers.items():
            out["heldout"].setdefault(name, {})[language] = score_reader(fn, examples, by="family")
    sets = {key: load_handwritten(handwritten_dir, truth_file) for key, (truth_file, _) in HANDWRITTEN_SETS.items()
            if (Path(handwritten_dir) / truth_file).is_file() or key == "handwritten"}
    sets["handwritten_all"] = [h for examples in sets.values() for h in examples]
    for key, handwritten in sets.items():
        out[key] = {"n": len(handwritten)}
        for name, fn in readers.items():
            read = read_findings(fn, [h.text for h in handwritten])
            out[key][name] = score_reader(fn, handwritten, by="language", read=read)
            out[key].setdefault("wrong", {})[name] = [h.family for h, r in zip(handwritten, read, strict=True)
                                                      if not _all_correct(h.findings, r)]
    texts = [ex.text for ex in make_examples(timing_reports, split="heldout", seed=seed + 7)]
    out["timing_ms_per_report"] = {name: _per_report_ms(readers[name], texts) for name in ("reader", "rule_parser")}
    out["bars"] = reader_bars(out)
    return out


def _all_correct(truth: Findings, read: Findings) -> bool:
    return all(all(v) for v in compare(truth, read).values())


def reader_bars(results: dict) -> dict:
    """The reader bars, measured: per held-out language every attribute >= 97 % and all-correct >= 95 %;
    hand-written reports (all, and the new ones alone) all-correct >= 95 %; <= 20 ms per report."""
    bars = {}
    for language, scores in results["heldout"]["reader"].items():
        overall = scores["overall"]
        worst = min((overall[a]["accuracy"], a) for a in (*LESION_ATTRIBUTES, *REPORT_ATTRIBUTES)
                    if overall.get(a, {}).get("accuracy") is not None)
        bars[f"heldout_{language}_worst_attribute"] = {"bar": ">= 0.97", "value": worst[0], "attribute": worst[1],
                                                        "pass": worst[0] >= 0.97}
        value = overall["all_correct"]["accuracy"]
        bars[f"heldout_{language}_all_correct"] = {"bar": ">= 0.95", "value": value, "pass": value >= 0.95}
    for key in ("handwritten_all", "handwritten_wild"):
        if results.get(key, {}).get("reader"):
            value = results[key]["reader"]["overall"]["all_correct"]["accuracy"]
            bars[f"{key}_all_correct"] = {"bar": ">= 0.95", "value": value, "pass": value >= 0.95}
    value = results["timing_ms_per_report"]["reader"]
    bars["ms_per_report"] = {"bar": "<= 20", "value": value, "pass": value <= 20.0}
    return bars


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def reader_markdown(results: dict) -> list[str]:
    """Markdown lines: one table per test set, learned reader vs rule parser, per attribute (% exact)."""
    attrs = (*REPORT_ATTRIBUTES, *LESION_ATTRIBUTES, "all_correct")
    lines = ["## Report reader\n",
             "Exact agreement (%) with the findings each report was written from; size = long axis within ±2 mm; "
             "lesion attributes per written lesion. reader: the learned tagger and the rules combined; tagger, "
             "rules: each alone; baseline: the rule parser used by evaluation.\n"]
    rows = []
    names = [n for n in ("reader", "tagger", "rules", "rule_parser") if n in results["heldout"]]
    for language in ("en", "zh"):
        for name in names:
            overall = results["heldout"][name][language]["overall"]
            rows.append([f"held-out {language}", name, *(_pct(overall.get(a, {}).get("accuracy")) for a in attrs)])
    labels = {key: label for key, (_, label) in HANDWRITTEN_SETS.items()} | {"handwritten_all": "hand-written all"}
    for key, label in labels.items():
        hand = results.get(key, {})
        for name in names:
            if hand.get(name):
                overall = hand[name]["overall"]
                rows.append([f"{label} ({hand['n']})", name,
                             *(_pct(overall.get(a, {}).get("accuracy")) for a in attrs)])
    lines += ["| set | reader | " + " | ".join(attrs) + " |", "|" + " --- |" * (len(attrs) + 2)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    timing = results["timing_ms_per_report"]
    lines += ["", f"Time per report (one report per call, CPU): reader {timing['reader']:.1f} ms, "
                  f"rule parser {timing['rule_parser']:.2f} ms.", ""]
    lines += ["| bar | target | measured | pass |", "| --- | --- | --- | --- |"]
    for key, bar in results["bars"].items():
        value = bar["value"]
        shown = f"{value:.3f}" + (f" ({bar['attribute']})" if "attribute" in bar else "")
        lines.append(f"| {key} | {bar['bar']} | {shown} | {'yes' if bar['pass'] else '**no**'} |")
    per_family = []
    for language in ("en", "zh"):
        for family, scores in sorted(results["heldout"]["reader"][language].items()):
            if family != "overall":
                per_family.append(f"{family} {_pct(scores['all_correct']['accuracy'])}")
    lines += ["", "Reader all-correct per held-out family: " + ", ".join(per_family) + "."]
    wrong = results.get("handwritten_all", results["handwritten"]).get("wrong", {}).get("reader")
    if wrong:
        lines.append(f"Hand-written reports the reader got wrong: {', '.join(wrong)}.")
    return lines + [""]
