"""int8 dynamic quantization on the CPU (issue 11 seed row): the report reader and the domain text encoder,
fp32 vs `torch.ao.quantization.quantize_dynamic` (Linear layers -> int8 weights, activations quantized on the
fly), measured in one run on this machine.

- Reader: all-correct and worst-attribute accuracy on held-out phrasing families (EN, ZH), time per report.
- Text encoder: time per report and cosine similarity of the pooled embedding and token states to fp32.

    .venv/bin/python benchmarks/bench_quantization.py          # -> benchmarks/results/quantization/
    .venv/bin/python benchmarks/bench_quantization.py --quick  # smoke run (5 reports per language)
"""

from __future__ import annotations

import copy
import io
import time
from pathlib import Path

import harness
import torch

from medgen.evaluation.reading import BAR_ATTRIBUTES
from medgen.pipelines.default_model import default_model_path
from medgen.reader import ReportReader
from medgen.reader.corpus import make_examples
from medgen.reader.scoring import score_reader
from medgen.text import TextEncoder


def quantized(module: torch.nn.Module) -> torch.nn.Module:
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(module), {torch.nn.Linear}, dtype=torch.qint8)


def state_mb(module: torch.nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell() / 1e6


def per_report_ms(fn, texts: list[str], repeats: int = 3) -> float:
    """Median over `repeats` of the mean wall time per report, one report per call (a warm-up call first), as
    `medgen evaluate --reader-only` times the reader."""
    fn(texts[:1])
    timing = harness.time_call(lambda: [fn([text]) for text in texts], repeats=repeats, warmup=0)
    return timing.median_s / len(texts) * 1000.0


def reader_rows(reader, n: int) -> dict:
    out = {}
    for language in ("en", "zh"):
        examples = make_examples(n, split="heldout", seed=4242 + (language == "zh"), languages=(language,))
        overall = score_reader(reader.read_batch, examples, by="family")["overall"]
        worst = min((overall[a]["accuracy"], a) for a in (*BAR_ATTRIBUTES, "size")
                    if overall.get(a, {}).get("accuracy") is not None)
        out[language] = {"all_correct": overall["all_correct"]["accuracy"], "worst": worst}
    texts = [ex.text for ex in make_examples(50, split="heldout", seed=4249)]
    out["ms_per_report"] = per_report_ms(reader.read_batch, texts)
    return out


def encoder_rows(encoder, reference, texts) -> dict:
    encoder.clear_cache()
    start = time.perf_counter()
    with torch.no_grad():
        for text in texts:
            encoder.clear_cache()
            encoder([text])
    ms = (time.perf_counter() - start) / len(texts) * 1000
    with torch.no_grad():
        encoder.clear_cache()
        got = encoder(texts)
    cos = torch.nn.functional.cosine_similarity(got.pooled, reference.pooled, dim=-1)
    mask = reference.attention_mask.bool()
    token_cos = torch.nn.functional.cosine_similarity(got.token_states[mask], reference.token_states[mask], dim=-1)
    return {"ms_per_report": ms, "pooled_cosine_min": float(cos.min()), "token_cosine_mean": float(token_cos.mean())}


def main() -> None:
    parser = harness.parser("quantization", __doc__)
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--n", type=int, default=200, help="held-out reports per language")
    args = harness.parse(parser, quick={"n": 5})
    torch.manual_seed(0)
    reader = ReportReader.from_pretrained(args.model / "reader").eval()
    results = {"reader": {"fp32": reader_rows(reader, args.n), "int8": reader_rows(quantized(reader), args.n)}}
    results["reader"]["size_mb"] = {"fp32": state_mb(reader), "int8": state_mb(quantized(reader))}
    encoder = TextEncoder.from_pretrained(str(args.model / "text_encoder")).eval()
    texts = [ex.text for ex in make_examples(100, split="heldout", seed=4250)]
    with torch.no_grad():
        reference = encoder(texts)
    results["text_encoder"] = {"fp32": encoder_rows(encoder, reference, texts),
                               "int8": encoder_rows(quantized(encoder), reference, texts)}
    r, e = results["reader"], results["text_encoder"]
    lines = ["# int8 dynamic quantization (CPU)", "",
             f"Produced by `benchmarks/bench_quantization.py` ({args.n} held-out reports per language; "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads).", "",
             "| report reader | all-correct EN | all-correct ZH | worst attribute EN | worst attribute ZH | ms / report "
             "| weights MB |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for kind in ("fp32", "int8"):
        row = r[kind]
        lines.append(f"| {kind} | {100 * row['en']['all_correct']:.1f} % | {100 * row['zh']['all_correct']:.1f} % | "
                     f"{row['en']['worst'][1]} {100 * row['en']['worst'][0]:.1f} % | {row['zh']['worst'][1]} "
                     f"{100 * row['zh']['worst'][0]:.1f} % | {row['ms_per_report']:.2f} | {r['size_mb'][kind]:.2f} |")
    lines += ["", "| text encoder | ms / report | pooled cosine to fp32 (min) | token cosine to fp32 (mean) |",
              "| --- | --- | --- | --- |"]
    for kind in ("fp32", "int8"):
        row = e[kind]
        lines.append(f"| {kind} | {row['ms_per_report']:.2f} | {row['pooled_cosine_min']:.4f} | "
                     f"{row['token_cosine_mean']:.4f} |")
    harness.write_json(args.out, results)
    harness.write_summary(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
