"""`run_evaluation`: the whole evaluation of one saved model, as numbered sections.

0. report reader (when the model has one): learned reader vs the rule parser on held-out phrasing and
   the hand-written reports, time per report (`reader_only=True` stops here)
1. held-out cases (findings -> phantom + held-out-phrasing report, EN/ZH alternating)
2. report fidelity (generate every report with every seed, analyze, compare with the truth)
3. density calibration (lesion-bearing reports at d = 0 ... 1)
4. alignment model (CLIP-style, trained on real phantom pairs) and report -> volume retrieval
5. realism and diversity (features, MMD, Fréchet; MS-SSIM among samples vs among real volumes)
6. speed and memory per stage, ratio against MONAI's stock sampler
7. write results.json, summary.md and the plots
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medgen.errors import OutputExistsError
from medgen.evaluation import alignment as align
from medgen.evaluation import realism as rea
from medgen.evaluation.calibration import DENSITY_GRID, score_calibration, select_calibration_cases
from medgen.evaluation.fidelity import PipelineGenerator, make_heldout_cases, score_fidelity
from medgen.evaluation.report import write_outputs
from medgen.evaluation.speed import benchmark_speed
from medgen.seeds import FIDELITY_CASE_SEED, SEED_RANGES

__all__ = ["BARS", "EvalSettings", "QUICK", "check_bars", "run_evaluation"]

# The project's acceptance bars (issue "Evaluation suite"): figure -> (comparison, threshold).
BARS = {
    "lesion_side": (">=", 0.95), "lesion_lobe": (">=", 0.80), "lesion_size_within_30pct_ge20mm": (">=", 0.80),
    "normal_specificity": (">=", 0.95), "effusion_side": (">=", 0.90), "emphysema_presence": (">=", 0.90),
    "density_spearman_rho": (">=", 0.90), "density_mae_hu": ("<=", 120.0), "cpu_64_seconds_per_volume": ("<=", 10.0),
    "layout_ct_agreement": (">=", 0.90),  # layout-grounded models only (issue "Layout-grounded generation")
}


@dataclass
class EvalSettings:
    """Sizes of one evaluation run (the defaults are the full run; `QUICK` is the test-suite run)."""

    n_reports: int = 100  # held-out reports (half EN, half ZH)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_calibration: int = 20  # reports with a lesion >= min_calibration_diameter_mm
    calibration_seeds: tuple[int, ...] = (0, 1, 2)
    min_calibration_diameter_mm: float = 25.0
    densities: tuple[float, ...] = DENSITY_GRID
    n_train_alignment: int = 200  # real phantom subjects for the alignment model
    alignment_steps: int = 400
    alignment_input: int = 64
    speed_repeats: int = 3
    speed_shapes: tuple[int, ...] | None = None  # None: (64,) on the CPU, (64, 128, 256) on a GPU
    num_inference_steps: int | None = None  # None: the model's default
    batch_size: int = 4
    reader_reports: int = 200  # held-out reports per language for the reader section
    case_seed: int = FIDELITY_CASE_SEED
    train_seed: int = 7
    extra: dict = field(default_factory=dict)


QUICK = EvalSettings(n_reports=4, seeds=(0, 1), n_calibration=2, calibration_seeds=(0,),
                     min_calibration_diameter_mm=0.0, n_train_alignment=8, alignment_steps=10, alignment_input=32,
                     speed_repeats=1, speed_shapes=(), num_inference_steps=2, batch_size=4,
                     reader_reports=6)


def _calibration_cases(cases, settings: EvalSettings, shape, spacing, phantom_version: int = 1):
    """Lesion-bearing held-out cases: from the fidelity cases first, then from extra held-out draws."""
    chosen = select_calibration_cases(cases, settings.n_calibration,
                                      min_diameter_mm=settings.min_calibration_diameter_mm)
    seed = settings.case_seed + 1
    while len(chosen) < settings.n_calibration and seed < settings.case_seed + 40:
        more = make_heldout_cases(max(8, settings.n_calibration), shape=shape, spacing=spacing, seed=seed,
                                  phantom_version=phantom_version)
        chosen += select_calibration_cases(more, settings.n_calibration - len(chosen),
                                           min_diameter_mm=settings.min_calibration_diameter_mm)
        seed += 1
    return chosen


def _alignment_pairs(settings: EvalSettings, shape, spacing, data_manifest, phantom_version: int = 1):
    """Real training pairs: (volumes, [reports per subject], findings) from a manifest's train split or new phantoms.

    Every subject also gets train-phrasing reports in both languages written from its findings.
    """
    from medgen.findings import Findings
    from medgen.phantom.chest import sample_findings
    from medgen.phantom.versions import make_case
    from medgen.reports.writer import write_report

    volumes, reports, findings = [], [], []
    rng = np.random.default_rng(settings.train_seed)
    if data_manifest is not None:
        from medgen.dataset.manifest import read_manifest
        from medgen.io import load_volume

        rows = [r for r in read_manifest(data_manifest) if r["split"] == "train" and r.get("findings") is not None]
        if len(rows) < 2:
            raise ValueError(f"{data_manifest}: need >= 2 train rows with findings for the alignment model, "
                             f"got {len(rows)}")
        for row in rows[: settings.n_train_alignment]:
            truth = Findings.from_dict(row["findings"])
            volumes.append(load_volume(row["image"]))
            reports.append([row["report"]] + [write_report(truth, language=lang, rng=rng).text for lang in ("en", "zh")])
            findings.append(truth)
        return volumes, reports, findings, f"manifest {data_manifest} (train split)"
    for i in range(settings.n_train_alignment):
        case = make_case(sample_findings(rng), shape=shape, spacing=spacing, version=phantom_version,
                         seed=SEED_RANGES["evaluation.alignment"].seed(settings.train_seed * 10_000 + i))
        volumes.append(case.image)
        reports.append([write_report(case.findings, language=lang, rng=rng).text for lang in ("en", "en", "zh", "zh")])
        findings.append(case.findings)
    return volumes, reports, findings, "phantoms built for this run (train phrasing)"


def _realism(cases, generated, seeds, real_b, model) -> dict:
    """Feature distances (intensity and learned) and MS-SSIM diversity."""
    real_a = [c.real for c in cases]
    gen = [generated[(c.index, seeds[0])] for c in cases]
    features = {}
    if len(cases) >= 2:
        for name, fn in (("intensity_texture", lambda vs: np.stack([rea.intensity_features(v) for v in vs])),
                         ("noise_power", lambda vs: np.stack([rea.noise_power_features(v) for v in vs])),
                         ("lung_hu_histogram", lambda vs: np.stack([rea.lung_histogram_features(v) for v in vs])),
                         ("alignment_image_tower", lambda vs: model.image_features(vs).numpy().astype(np.float64))):
            features[name] = rea.compare_feature_sets(fn(real_a), fn(gen), fn(real_b))
    diversity = {
        "generated_same_report": rea.pairwise_ms_ssim([[generated[(c.index, s)] for s in seeds] for c in cases])
        if len(seeds) >= 2 else None,
        "real_same_findings": rea.pairwise_ms_ssim([[a, b] for a, b in zip(real_a, real_b, strict=True)]),
        "real_different_subjects": rea.pairwise_ms_ssim([[a, b] for a, b in zip(real_a, real_a[1:], strict=False)])
        if len(cases) >= 2 else None,
        "generated_different_reports": rea.pairwise_ms_ssim([[a, b] for a, b in zip(gen, gen[1:], strict=False)])
        if len(cases) >= 2 else None,
    }
    same = diversity["generated_same_report"]
    diversity["collapse_ratio"] = same["mean"] / diversity["real_same_findings"]["mean"] if same else None
    return {"n_real": len(real_a), "features": features, "diversity": diversity}


def _retrieval(model, text_encoder, cases, generated, seeds, real_b) -> dict:
    pooled = align.pooled_text(text_encoder, [c.report for c in cases])
    text = model.embed_text(pooled).detach()
    out = {"real_heldout": align.volume_retrieval_metrics(text, model.embed_images([c.real for c in cases])),
           "real_same_findings_other_subject": align.volume_retrieval_metrics(text, model.embed_images(real_b))}
    per_seed = [align.volume_retrieval_metrics(text, model.embed_images([generated[(c.index, s)] for c in cases]))
                for s in seeds]
    out["generated"] = {k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0]}
    out["generated"]["per_seed"] = per_seed
    return out


def time_whole_call(pipe, report: str, *, repeats: int, steps=None) -> dict:
    """Median wall time of report -> CT (+ labels) at the model's grid: read, lay out, denoise, decode."""
    import torch

    pipe(report, num_inference_steps=steps, progress=False)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipe(report, num_inference_steps=steps, progress=False)
        times.append(time.perf_counter() - t0)
    side = str(min(pipe.config["shape"]))
    return {"device": pipe.device.type, "seconds_per_volume": {side: float(np.median(times))},
            "runs_s": times, "torch_threads": torch.get_num_threads(),
            "note": "layout-grounded model: whole call timed (reader + layout + sampler + decode); no stock-"
                    "inferer comparison (MONAI's LatentDiffusionInferer cannot join a layout)"}


def check_bars(results: dict) -> dict:
    """Each bar's measured value and whether it passes (None when the run did not measure it)."""
    fid = results.get("fidelity", {}).get("overall", {})
    cal = results.get("calibration", {})
    speed = results.get("speed", {})
    measured = {key: fid.get(key, {}).get("mean") for key in BARS if key in fid}
    measured["density_spearman_rho"] = cal.get("spearman_rho")
    measured["density_mae_hu"] = cal.get("mae_hu")
    if speed.get("device") == "cpu":
        measured["cpu_64_seconds_per_volume"] = speed.get("seconds_per_volume", {}).get("64")
    out = {}
    for key, (op, bar) in BARS.items():
        value = measured.get(key)
        ok = None if value is None else (value >= bar if op == ">=" else value <= bar)
        out[key] = {"bar": f"{op} {bar:g}", "value": value, "pass": ok}
    return out


def run_evaluation(model_dir, out_dir, *, quick: bool = False, data_manifest=None, device="cpu", seeds=None,
                   n_reports: int | None = None, settings: EvalSettings | None = None,
                   overwrite: bool = False, progress: bool = False, reader_only: bool = False) -> dict:
    """Evaluate a saved `ReportToVolumePipeline`; writes ``out_dir/{results.json, summary.md, *.png}``.

    Args:
        model_dir: folder written by ``save_pretrained``.
        out_dir: output folder (created); the alignment model is saved in ``out_dir/alignment_model``.
        quick: tiny sizes (`QUICK`) for tests and smoke runs.
        data_manifest: a dataset manifest whose train split trains the alignment model (default: phantoms
            built for the run on the model's grid).
        device: "cpu" or "cuda[:N]" for the generator (and the 128^3 / 256^3 speed runs on a GPU).
        seeds: noise seeds for fidelity and calibration (overrides the settings).
        n_reports: number of held-out reports (overrides the settings).
        settings: full control over sizes (default: full run, or `QUICK`).
        overwrite: replace an existing results.json.
        progress: print each section as it starts (stderr) and show tqdm bars while generating.
        reader_only: run only the report-reader section (the model must have a reader).

    Returns:
        The results (the same content as results.json).
    """
    from medgen._version import __version__
    from medgen.io.weights import combined_checksum
    from medgen.phantom.versions import make_case
    from medgen.pipelines import ReportToVolumePipeline

    out_dir = Path(out_dir)
    if (out_dir / "results.json").exists() and not overwrite:
        raise OutputExistsError(f"{out_dir / 'results.json'}: output exists (pass overwrite=True / --overwrite)")
    settings = dataclasses.replace(settings or (QUICK if quick else EvalSettings()))
    if seeds is not None:
        settings.seeds = settings.calibration_seeds = tuple(int(s) for s in seeds)
    if n_reports is not None:
        if int(n_reports) < 1:
            raise ValueError(f"`n_reports` must be >= 1, got {n_reports}")
        settings.n_reports = int(n_reports)
    started, timings = time.perf_counter(), {}

    def lap(name, t0):
        timings[name] = round(time.perf_counter() - t0, 2)
        say(f"  {name}: {timings[name]:.0f} s")

    def say(message):
        if progress:
            print(f"medgen evaluate: {message}", file=sys.stderr, flush=True)

    pipe = ReportToVolumePipeline.from_pretrained(model_dir, device=device)
    shape, spacing = tuple(pipe.config["shape"]), tuple(pipe.config["spacing"])
    version = int(pipe.config.get("phantom_version", 1))  # reference subjects from the model's own phantom
    generate = PipelineGenerator(pipe, num_inference_steps=settings.num_inference_steps)
    results: dict = {}
    # 0. Report reader
    if pipe.reader is not None:
        from medgen.evaluation.reading import evaluate_reader

        say(f"0/6 report reader: {settings.reader_reports} held-out reports per language + hand-written set")
        t0 = time.perf_counter()
        results["reader"] = evaluate_reader(pipe.reader, n_per_language=settings.reader_reports)
        lap("reader", t0)
    elif reader_only:
        raise ValueError(f"{model_dir}: the model has no report reader (no reader/ folder) to evaluate")
    if reader_only:
        results["meta"] = {"model_dir": str(Path(model_dir).resolve()), "model_name": pipe.config.get("name"),
                           "quick": bool(quick), "device": str(pipe.device), "reader_only": True,
                           "medgen_version": __version__, "timings_s": timings,
                           "elapsed_s": time.perf_counter() - started}
        write_outputs(results, out_dir)
        return results
    # 1. Held-out cases
    say(f"1/6 building {settings.n_reports} held-out cases")
    t0 = time.perf_counter()
    cases = make_heldout_cases(settings.n_reports, shape=shape, spacing=spacing, seed=settings.case_seed,
                               phantom_version=version)
    real_b = [make_case(c.findings, shape=shape, spacing=spacing, seed=c.subject_seed + 50_000, version=version).image
              for c in cases]
    lap("cases", t0)
    # 2. Report fidelity
    say(f"2/6 report fidelity: {settings.n_reports} reports x {len(settings.seeds)} seeds")
    t0 = time.perf_counter()
    results["fidelity"], generated, records = score_fidelity(cases, generate, settings.seeds,
                                                             batch_size=settings.batch_size, progress=progress)
    results["fidelity"]["records"] = records
    lap("fidelity", t0)
    # 3. Density calibration
    say("3/6 density calibration")
    t0 = time.perf_counter()
    cal_cases = _calibration_cases(cases, settings, shape, spacing, version)
    results["calibration"] = {**score_calibration(cal_cases, generate, settings.calibration_seeds,
                                                  densities=settings.densities, progress=progress),
                              "min_lesion_diameter_mm": settings.min_calibration_diameter_mm}
    lap("calibration", t0)
    # 4. Alignment model + retrieval
    say(f"4/6 alignment model ({settings.n_train_alignment} real subjects, {settings.alignment_steps} steps) and retrieval")
    t0 = time.perf_counter()
    volumes, reports, findings, source = _alignment_pairs(settings, shape, spacing, data_manifest, version)
    model, history = align.train_alignment(pipe.text_encoder, volumes, reports, findings,
                                           steps=settings.alignment_steps, input_size=settings.alignment_input)
    model.save_pretrained(out_dir / "alignment_model")
    results["alignment"] = {"training": {**history, "source": source},
                            "retrieval": _retrieval(model, pipe.text_encoder, cases, generated, settings.seeds, real_b)}
    lap("alignment", t0)
    # 5. Realism and diversity
    say("5/6 realism and diversity")
    t0 = time.perf_counter()
    results["realism"] = _realism(cases, generated, settings.seeds, real_b, model)
    lap("realism", t0)
    slice_reader_dir = Path(model_dir) / "slice_reader"
    if slice_reader_dir.is_dir():  # a second, learned opinion on what the volumes show
        from medgen.evaluation.second_opinion import second_opinion
        from medgen.slices.describer.model import SliceReader

        say("5b/6 second opinion: the slice reader beside the HU analyzer")
        t0 = time.perf_counter()
        results["second_opinion"] = second_opinion(SliceReader.from_pretrained(slice_reader_dir), cases, generated)
        lap("second_opinion", t0)
    # 6. Speed and memory
    say("6/6 speed and memory")
    t0 = time.perf_counter()
    shapes = settings.speed_shapes
    if not shapes:  # quick: the model's own grid; full: 64^3 (CPU) or 64/128/256^3 (GPU)
        shapes = (min(shape),) if quick else ((64, 128, 256) if pipe.device.type == "cuda" else (64,))
    speed_report = next((c.report for c in cases if c.findings.lesions), cases[0].report)
    if pipe.layout_grounded:  # MONAI's stock inferer cannot join a layout: time the whole call instead
        results["speed"] = time_whole_call(pipe, speed_report, repeats=max(1, settings.speed_repeats),
                                           steps=settings.num_inference_steps)
    else:
        results["speed"] = benchmark_speed(pipe, report=speed_report, shapes=shapes,
                                           repeats=settings.speed_repeats, steps=settings.num_inference_steps)
    lap("speed", t0)
    # 7. Write
    results["bars"] = check_bars(results)
    results["meta"] = {
        "model_dir": str(Path(model_dir).resolve()), "model_name": pipe.config.get("name"),
        "model_sha256": combined_checksum(pipe.weights_sha256) if pipe.weights_sha256 else None,
        "quick": bool(quick), "device": str(pipe.device), "shape": list(shape), "spacing": list(spacing),
        "phantom_version": version,
        "num_inference_steps": settings.num_inference_steps or pipe.config["num_inference_steps"],
        "guidance": dict(pipe.config["guidance"]), "settings": dataclasses.asdict(settings),
        "n_generated_total": generate.n_generated, "medgen_version": __version__, "timings_s": timings,
        "elapsed_s": time.perf_counter() - started, "data_manifest": str(data_manifest) if data_manifest else None,
    }
    write_outputs(results, out_dir)
    return results
