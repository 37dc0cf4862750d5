"""Benchmark of the 2D slice preview (issue 11 bars), all measured in one run on this machine:

1. Analyzer check: `medgen.slices.analyze.score_slice` on the *real* key slices of held-out phantoms against
   their own layouts (must be ~100 %) and against another subject's layout (how often it says "present" by
   chance).
2. Preview fidelity: held-out reports (held-out phrasing families, EN/ZH alternating, seeds of the 3D
   evaluation's case generator) -> `SlicePreviewPipeline` (reader -> layout -> key slice -> 4 candidates).
   Of previews whose key slice shows a lesion: present (lesion-like HU where the layout put it) and on the
   reported side (drawn in the layout's lung, not the other, and the layout's side is the report's).
   Effusion: fluid-like HU in the layout's fluid on each side. Warm time per call (4 candidates at 128 px).
3. Sampler and refiner: the same reports and seeds, one candidate each, under DPM++ 2M Karras 20 steps and
   DDIM 50 steps, with and without the refiner; realism = MMD / Fréchet distance of slice intensity/texture
   features (`medgen.evaluation.realism.intensity_features`) to the real phantom slices drawn from the very
   same layouts, beside the real-vs-real floor (the same findings on other subjects); lesion HU error
   against the target density.

    .venv/bin/python benchmarks/bench_preview.py --model runs/preview-model   # -> benchmarks/results/preview/
    .venv/bin/python benchmarks/bench_preview.py --quick    # smoke run: embedded model, 4 reports, one sampler row

Writes ``summary.md``, ``results.json`` and ``preview_examples.png`` to `--out`.
"""

from __future__ import annotations

import time
from pathlib import Path

import harness
import numpy as np

from medgen.evaluation.realism import compare_feature_sets, intensity_features
from medgen.layout.labels import FIRST_LESION_LABEL
from medgen.slices.analyze import score_slice
from medgen.slices.generator.data import subject_pairs
from medgen.slices.generator.pipeline import SlicePreviewPipeline
from medgen.slices.sources import EVAL_SEED0
from medgen.volume import Volume, density_to_hu

CONFIGS = {"base+refiner, DPM++ 2M Karras 20": ("dpmpp-2m-karras", 20, True),
           "base+refiner, DPM++ 2M Karras 12": ("dpmpp-2m-karras", 12, True),
           "base, DPM++ 2M Karras 20": ("dpmpp-2m-karras", 20, False),
           "base+refiner, DDIM 50": ("ddim", 50, True),
           "base, DDIM 50": ("ddim", 50, False)}


def heldout_reports(n: int, seed: int = 2024):
    """(report, language, truth findings) with the 3D evaluation's held-out case draws (no phantom built)."""
    from medgen.phantom.chest import sample_findings
    from medgen.reports.writer import write_report

    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        findings = sample_findings(rng)
        language = ("en", "zh")[i % 2]
        out.append((write_report(findings, language=language, rng=rng, split="heldout").text, language, findings))
    return out


def slice_features(hu: np.ndarray, pixel_mm: float) -> np.ndarray:
    """The 3D realism features of a slice (stacked twice along z: no through-plane texture)."""
    return intensity_features(Volume(np.repeat(hu[:, :, None], 2, axis=2), np.diag([pixel_mm, pixel_mm, 5.0, 1.0])))


def analyzer_check(n: int) -> dict:
    rows = [subject_pairs(EVAL_SEED0 + i, extra=0)[0] for i in range(n)]
    own = [score_slice(r[0].astype(np.float32) * 1024.0, r[1]) for r in rows]
    other = [score_slice(rows[(i + 7) % n][0].astype(np.float32) * 1024.0, r[1]) for i, r in enumerate(rows)]
    lesions = [x for s in own for x in s["lesions"]]
    chance = [x for s in other for x in s["lesions"]]
    fluid = [x for s in own for x in s["effusion"]]
    return {"n_slices": n, "lesions": len(lesions), "present_pct": 100 * np.mean([x["present"] for x in lesions]),
            "on_side_pct": 100 * np.mean([x["on_side"] for x in lesions]),
            "present_on_other_subject_pct": 100 * np.mean([x["present"] for x in chance]),
            "effusion_sides": len(fluid), "effusion_present_pct": 100 * np.mean([x["present"] for x in fluid])}


def real_slice(pipe: SlicePreviewPipeline, report: str, layout, seed: int, *, other_subject: bool = False) -> np.ndarray:
    """A real phantom key slice for a preview's layout: the phantom drawn from the layout's findings, anatomy and
    seed (the layout's own CT, at the layout's key slice), or with `other_subject` the same findings on the
    subject of another seed (at its own key slice): the real-vs-real floor."""
    from medgen.phantom.chest import make_phantom_with_tissues
    from medgen.slices.data import _display, key_slice_index

    anatomy = None
    if pipe.bank is not None and not other_subject:
        pooled = pipe.model.text_encoder.first([report]).pooled[0].float().numpy()
        anatomy = pipe.bank.retrieve(pooled, seed)[0]
    case, _ = make_phantom_with_tissues(layout.findings, shape=layout.labels.shape, spacing=layout.labels.spacing,
                                        seed=int(seed) + (10_000 if other_subject else 0), anatomy=anatomy)
    index = key_slice_index(np.asarray(case.labels.array), case.lesion_ids)
    return _display(np.asarray(case.image.array)[:, :, index]).astype(np.float32)


def fidelity(pipe: SlicePreviewPipeline, cases, n_candidates: int, steps: int | None = None) -> tuple[dict, list]:
    times, lesion_rows, fluid_rows, results = [], [], [], []
    options = {} if steps is None else {"steps": steps}
    pipe(cases[0][0], n=n_candidates, seed=0, **options)  # warm-up
    for i, (report, language, truth) in enumerate(cases):
        start = time.perf_counter()
        result = pipe(report, n=n_candidates, seed=i, **options)
        times.append(time.perf_counter() - start)
        results.append(result)
        truth_sides = {lesion.lobe.split("_")[0] for lesion in truth.lesions}
        laid = result.layout.findings.lesions
        for hu in result.hu:
            scored = score_slice(hu, result.labels)
            for lesion in scored["lesions"]:
                side = laid[lesion["label"] - FIRST_LESION_LABEL].lobe.split("_")[0]
                lesion_rows.append({"language": language, "present": lesion["present"],
                                    "drawn_on_layout_side": lesion["present"] and lesion["on_side"],
                                    "reported_side": lesion["present"] and lesion["on_side"] and side in truth_sides,
                                    "hu_error": abs(lesion["median_hu"] - density_to_hu(
                                        laid[lesion["label"] - FIRST_LESION_LABEL].density))})
            fluid_rows += [{"language": language, "present": f["present"]} for f in scored["effusion"]]
    import inspect

    default_steps = inspect.signature(type(pipe).__call__).parameters["steps"].default
    out = {"n_reports": len(cases), "candidates": n_candidates, "steps": steps or default_steps,
           "seconds_per_call_median": float(np.median(times)), "seconds_per_call_p90": float(np.percentile(times, 90))}
    for language in ("all", "en", "zh"):
        rows = [r for r in lesion_rows if language in ("all", r["language"])]
        fluid = [r for r in fluid_rows if language in ("all", r["language"])]
        out[language] = {"lesion_previews": len(rows),
                         "present_pct": 100 * np.mean([r["present"] for r in rows]) if rows else None,
                         "reported_side_pct": 100 * np.mean([r["reported_side"] for r in rows]) if rows else None,
                         "layout_side_pct": 100 * np.mean([r["drawn_on_layout_side"] for r in rows]) if rows else None,
                         "lesion_hu_error_median": float(np.median([r["hu_error"] for r in rows])) if rows else None,
                         "effusion_sides": len(fluid),
                         "effusion_present_pct": 100 * np.mean([r["present"] for r in fluid]) if fluid else None}
    return out, results


def sampler_table(pipe: SlicePreviewPipeline, cases, results, quick: bool = False) -> dict:
    pixel = pipe.fov_mm / int(pipe.model.config["size"])
    import torch

    from medgen.slices.generator.autoencoder import HU_PER_UNIT, vae_decode, vae_encode

    real, real_b, recon = [], [], []
    for i, (result, (report, _, _)) in enumerate(zip(results, cases, strict=True)):
        hu = real_slice(pipe, report, result.layout, i)
        real.append(slice_features(hu, pixel))
        real_b.append(slice_features(real_slice(pipe, report, result.layout, i, other_subject=True), pixel))
        with torch.no_grad():  # the autoencoder's ceiling: the real slice through encode + decode
            image = torch.from_numpy(np.clip(hu / HU_PER_UNIT, -1, 1))[None, None]
            back = vae_decode(pipe.model.vae, vae_encode(pipe.model.vae, image, pipe.model.scale), pipe.model.scale)
        recon.append(slice_features(back[0, 0].numpy() * HU_PER_UNIT, pixel))
    table = {"autoencoder reconstruction of the real slices (ceiling)": {
        **compare_feature_sets(np.stack(real), np.stack(recon), np.stack(real_b)), "seconds_per_slice": float("nan")}}
    configs = dict(list(CONFIGS.items())[:1] if quick else CONFIGS)
    if pipe.model.student is not None:  # distillation: the student at 8 steps vs the teacher at 8 steps undistilled
        configs["distilled student, 8 steps (1 branch)"] = ("distilled", 8, False)
        configs["base+refiner, DDIM 8 (not distilled)"] = ("ddim", 8, True)
    for name, (sampler, steps, refiner) in configs.items():
        features, seconds = [], []
        for i, (report, _, _) in enumerate(cases):
            start = time.perf_counter()
            result = pipe(report, n=1, seed=i, sampler=sampler, steps=steps, use_refiner=refiner)
            seconds.append(time.perf_counter() - start)
            features.append(slice_features(result.hu[0], pixel))
        scores = compare_feature_sets(np.stack(real), np.stack(features), np.stack(real_b))
        table[name] = {**scores, "seconds_per_slice": float(np.median(seconds))}
    return table


def write(out: Path, results: dict, examples) -> None:
    from medgen.slices.generator.render import preview_png

    harness.write_json(out, results)
    a, f = results["analyzer"], results["fidelity"]
    lines = ["# Slice preview (2D, SDXL-style) — measured", "",
             f"Produced by `benchmarks/bench_preview.py` (model `{results['model']}`, {f['n_reports']} held-out "
             f"reports, EN/ZH alternating, {f['candidates']} candidates each, 2 CPU cores).", "",
             "## Analyzer check (real phantom key slices, held-out seeds)", "",
             f"On their own layouts: lesion present {a['present_pct']:.1f} %, on its side {a['on_side_pct']:.1f} % "
             f"({a['lesions']} lesions); effusion present {a['effusion_present_pct']:.1f} % ({a['effusion_sides']} "
             f"sides). On another subject's layout a lesion reads present {a['present_on_other_subject_pct']:.1f} % "
             "of the time (the analyzer's chance level).", "",
             "## Preview fidelity (bars: present >= 90 %, reported side >= 95 %; time <= 1 s for 4 at 128 px)", "",
             "| language | lesion previews | present % | on the layout's side % | on reported side % | "
             "lesion HU error (median) | effusion sides | effusion present % |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    def cell(value, digits=1):
        return "–" if value is None else f"{value:.{digits}f}"

    for language in ("all", "en", "zh"):
        r = f[language]
        lines.append(f"| {language} | {r['lesion_previews']} | {cell(r['present_pct'])} | {cell(r['layout_side_pct'])} "
                     f"| {cell(r['reported_side_pct'])} "
                     f"| {cell(r['lesion_hu_error_median'], 0)} | {r['effusion_sides']} | "
                     f"{cell(r['effusion_present_pct'])} |")
    lines += ["", f"Warm time per call ({f['candidates']} candidates at 128 px, DPM++ 2M Karras {f['steps']} steps with the "
                  "refiner; reader + layout + sampling + decoding): median "
                  f"{f['seconds_per_call_median']:.2f} s, p90 {f['seconds_per_call_p90']:.2f} s.", "",
              "## Sampler and refiner (one candidate per report; realism vs real slices of the same layouts)", "",
              "| configuration | MMD | Fréchet | s / slice |", "| --- | --- | --- | --- |"]
    for name, row in results["samplers"].items():
        seconds = row["seconds_per_slice"]
        lines.append(f"| {name} | {row['mmd']:.3f} | {row['frechet']:.2f} | "
                     f"{'–' if np.isnan(seconds) else f'{seconds:.2f}'} |")
    floor = next(iter(results["samplers"].values()))
    lines += [f"| real vs real (same findings, other subjects) | {floor['mmd_real_vs_real']:.3f} | "
              f"{floor['frechet_real_vs_real']:.2f} | |", "", "![examples](preview_examples.png)", ""]
    harness.write_summary(out, "\n".join(lines))
    preview_png(examples, out / "preview_examples.png", overwrite=True)


def main() -> None:
    parser = harness.parser("preview", __doc__)
    parser.add_argument("--model", type=Path, default=None, help="preview model folder (default: the embedded one)")
    parser.add_argument("--n", type=int, default=60, help="held-out reports")
    parser.add_argument("--n-analyzer", type=int, default=40, help="real slices for the analyzer check")
    parser.add_argument("--steps", type=int, default=None, help="preview steps for the fidelity part (default: the pipeline's)")
    args = harness.parse(parser, quick={"n": 4, "n_analyzer": 4, "steps": 2})
    pipe = SlicePreviewPipeline.from_pretrained(args.model)
    cases = heldout_reports(args.n)
    results = {"model": str(args.model or "embedded"), "analyzer": analyzer_check(args.n_analyzer)}
    print("analyzer", results["analyzer"], flush=True)
    results["fidelity"], previews = fidelity(pipe, cases, 4, args.steps)
    print("fidelity", results["fidelity"], flush=True)
    results["samplers"] = sampler_table(pipe, cases, previews, quick=args.quick)
    print("samplers", results["samplers"], flush=True)
    shown = next((r for r in previews if (r.labels >= FIRST_LESION_LABEL).any()), previews[0])
    write(args.out, results, shown)


if __name__ == "__main__":
    main()
