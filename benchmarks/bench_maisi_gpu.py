"""MAISI behind medgen's reader and layout on a GPU: 10 reports at 512 x 512 x 256, time, peak GPU memory, and
whether the CT shows what the report says (medgen's HU analyzer, `medgen.analysis.analyze_volume`).

    .venv/bin/python benchmarks/bench_maisi_gpu.py --maisi DIR --device cuda     # real weights (docs/maisi.md)
    .venv/bin/python benchmarks/bench_maisi_gpu.py --quick                       # stand-in folder, 256x256x128, CPU ok
    .venv/bin/python benchmarks/bench_maisi_gpu.py --compose-check               # CPU: what medgen adds, measured

Per report: wall time of the whole call (reader, candidate mask, placement, MAISI, composition) and of MAISI's
diffusion and decode; peak GPU memory; the analyzer's lesion nearest the placed centre (side, lobe, equivalent
diameter) against the report; the mean HU inside the lesion label and the analyzer's lesion HU against the
density target (-750 + 800 d). A PNG grid shows an axial and a coronal slice through each lesion. Bars (issue 24):
<= 120 s per volume on an H100, side and lobe right in >= 9/10, lesion HU within 100 HU of the target.
MAISI's own published figures (NVIDIA, A100 80 GB, NV-Generate-CTMR docs/performance.md) are printed beside
ours for scale; they are NVIDIA's, not ours.

``--compose-check`` measures what medgen adds to MAISI without MAISI's weights: the phantom's normal chest CT
(`medgen.phantom`, mapped to MAISI ids) stands in for MAISI's decoded image; the reports' findings are placed in
its MAISI label map and composed exactly as after a MAISI render (lesion HU calibration, effusion and emphysema
painting), then the analyzer reads the CT: lesion side/lobe/size/HU, effusion side, emphysema grade.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import harness
import numpy as np

REPORTS = (
    "A 30 mm solid mass in the right lower lobe. Small left pleural effusion.",
    "18 mm part-solid nodule in the left upper lobe.",
    "A 25 mm ground-glass nodule in the right upper lobe.",
    "Spiculated 40 mm mass in the left lower lobe. Moderate right pleural effusion.",
    "22 mm solid nodule in the right middle lobe. Moderate emphysema, upper lobe predominant.",
    "A 35 mm solid mass in the right upper lobe.",
    "15 mm solid nodule in the left lower lobe. No pleural effusion.",
    "Lobulated 28 mm mass in the right lower lobe. Mild emphysema.",
    "A 20 mm part-solid nodule in the left upper lobe. Small bilateral pleural effusions.",
    "45 mm solid mass in the left lower lobe.",
)
NVIDIA_PUBLISHED = ("NVIDIA (A100 80 GB, rflow-ct, docs/performance.md of NV-Generate-CTMR): 512x512x512 in 51 s "
                    "(DM 19 s + VAE 32 s) at 45.3 GB peak; 512x512x128 in 11-13 s at 15.7-21.0 GB")


def build_parser():
    p = harness.parser("maisi_gpu", __doc__)
    p.add_argument("--maisi", type=Path, help="MAISI folder (default with --quick: a stand-in written to a temp dir)")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 256])
    p.add_argument("--spacing", type=float, nargs=3, default=[0.75, 0.75, 1.25])
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the folder's, 30 for rflow-ct)")
    p.add_argument("--reports", type=int, default=len(REPORTS), help="how many of the 10 reports")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decode-roi", type=int, nargs=3, default=[80, 80, 64],
                   help="VAE sliding-window size in latent voxels (NVIDIA's 80 GB setting)")
    p.add_argument("--decode-overlap", type=float, default=0.4)
    p.add_argument("--compose-check", action="store_true",
                   help="CPU: measure medgen's placement and composition on phantom CT instead of rendering")
    return p


def _peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def measure(result) -> dict:
    """Analyzer's view of one result against its findings."""
    from medgen.analysis import analyze_volume

    findings, labels = result.findings, np.asarray(result.labels.array)
    hu = np.asarray(result.volume.array)
    row = {"lesions": []}
    analysis = analyze_volume(result.volume)
    for lesion in findings.lesions:
        target = -750.0 + 800.0 * lesion.density
        found = min(analysis.lesions, default=None,
                    key=lambda m: float(np.linalg.norm(np.subtract(m.center_mm, lesion.center_mm))))
        distance = float(np.linalg.norm(np.subtract(found.center_mm, lesion.center_mm))) if found else None
        label_hu = float(hu[labels == 23].mean()) if (labels == 23).any() else None
        row["lesions"].append({
            "lobe": lesion.lobe, "diameter_mm": lesion.diameter_mm, "target_hu": target, "label_mean_hu": label_hu,
            "found": found is not None and distance is not None and distance <= max(lesion.diameter_mm, 15.0),
            "found_side": found.side if found else None, "found_lobe": found.lobe if found else None,
            "found_diameter_mm": found.diameter_mm if found else None, "found_mean_hu": found.mean_hu if found else None,
            "centre_error_mm": distance})
    row["effusion"] = analysis.effusion.side if analysis.effusion else None
    row["emphysema"] = analysis.emphysema_grade
    return row


def main(argv=None) -> int:
    import torch

    args = harness.parse(build_parser(), argv, quick={"shape": [256, 256, 128], "spacing": [1.5, 1.5, 2.5],
                                                      "steps": 1, "reports": 2, "decode_roi": [64, 64, 32]})
    if args.compose_check:
        return compose_check(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    maisi = args.maisi
    if maisi is None:
        if not args.quick:
            raise SystemExit("--maisi DIR is required (or --quick for the stand-in)")
        from medgen.render.maisi import write_standin

        maisi = write_standin(Path(tempfile.mkdtemp(prefix="maisi-standin-")))
    from medgen.io.png import render_grid
    from medgen.pipelines.maisi import MaisiPipeline

    pipe = MaisiPipeline.from_folders(maisi, device=device)
    pipe.renderer.bundle.infer.update(autoencoder_sliding_window_infer_size=list(args.decode_roi),
                                      autoencoder_sliding_window_infer_overlap=args.decode_overlap)
    rows, volumes, captions, centres = [], [], [], []
    for i, report in enumerate(REPORTS[: args.reports]):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = pipe(report, seed=args.seed + i, shape=tuple(args.shape), spacing=tuple(args.spacing),
                      steps=args.steps)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        attempt = result.provenance["maisi"]["attempts"][-1]
        row = {"report": report, "seconds": round(seconds, 1), "diffusion_s": attempt["diffusion_s"],
               "decode_s": attempt["decode_s"], "tries": len(result.provenance["maisi"]["attempts"]),
               "peak_gib": _peak_gib(device), **measure(result)}
        rows.append(row)
        volumes.append(result.volume)
        lesion = result.findings.lesions[0] if result.findings.lesions else None
        centres.append(lesion.center_mm if lesion else None)
        captions.append(f"{i + 1}. {report[:70]}")
        print(f"[{i + 1}/{args.reports}] {seconds:.1f} s  {row['lesions']}", flush=True)
    render_grid(volumes, captions, args.out / "maisi_grid.png", centers_mm=centres)
    harness.write_json(args.out, {"machine": harness.machine(), "command": harness.command_line(argv),
                                  "device": device, "maisi": str(maisi), "shape": args.shape, "spacing": args.spacing,
                                  "rows": rows, "nvidia_published": NVIDIA_PUBLISHED})
    harness.write_summary(args.out, summary(rows, args, device))
    return 0


def summary(rows: list[dict], args, device: str) -> str:
    lesions = [les for r in rows for les in r["lesions"]]
    side_lobe = sum(1 for les in lesions if les["found"] and les["found_side"] == les["lobe"].split("_")[0]
                    and les["found_lobe"] == les["lobe"])
    hu_ok = sum(1 for les in lesions if les["found_mean_hu"] is not None and abs(les["found_mean_hu"] - les["target_hu"]) <= 100)
    table = harness.markdown_table(
        ["report", "s", "diffusion s", "decode s", "peak GiB", "lobe", "found lobe", "mm", "found mm", "target HU",
         "label HU", "found HU"],
        [[r["report"][:40], r["seconds"], r["diffusion_s"], r["decode_s"],
          "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}", les["lobe"], les["found_lobe"], les["diameter_mm"],
          None if les["found_diameter_mm"] is None else round(les["found_diameter_mm"], 1), round(les["target_hu"]),
          None if les["label_mean_hu"] is None else round(les["label_mean_hu"]),
          None if les["found_mean_hu"] is None else round(les["found_mean_hu"])]
         for r in rows for les in r["lesions"]])
    times = [r["seconds"] for r in rows]
    return (f"# MAISI renderer ({device}, {'x'.join(map(str, args.shape))} at {args.spacing} mm)\n\n"
            f"Command: `{harness.command_line()}`  \n{harness.machine()}\n\n{table}\n\n"
            f"- median time per volume: {np.median(times):.1f} s (max {max(times):.1f} s)\n"
            f"- lesion found on the reported side and lobe: {side_lobe}/{len(lesions)}\n"
            f"- analyzer's lesion HU within 100 HU of the target: {hu_ok}/{len(lesions)}\n"
            f"- for scale, not ours: {NVIDIA_PUBLISHED}\n")


def compose_check(args) -> int:
    """Placement + composition on the phantom's normal CT (3 seeds x the 10 reports), read by the analyzer."""
    from medgen.analysis import analyze_volume
    from medgen.findings import Findings
    from medgen.maisi_labels import MAISI_LABELS, from_coarse
    from medgen.phantom.chest import make_phantom_with_tissues
    from medgen.pipelines.default_model import resolve_model_path
    from medgen.reader import ReportReader
    from medgen.render.maisi.placement import place_findings
    from medgen.render.maisi.renderer import MaisiRenderer, condition_labels
    from medgen.volume import Volume

    reader = ReportReader.from_pretrained(resolve_model_path(None) / "reader")
    shape, spacing = (128, 128, 64), (3.0, 3.0, 5.0)  # coarser than MAISI's grids: the analyzer's CPU time
    rows = []
    for seed in range(3 if not args.quick else 1):
        case, _ = make_phantom_with_tissues(Findings(), shape=shape, spacing=spacing, seed=100 + seed)
        coarse = np.asarray(case.labels.array).astype(np.uint8)
        base = from_coarse(coarse, fallback={"bone": MAISI_LABELS["vertebrae T6"], "mediastinum": MAISI_LABELS["heart"]})
        for i, report in enumerate(REPORTS[: args.reports]):
            findings = reader.read(report).findings
            layout = place_findings(base, case.labels.affine, findings, seed=seed * 100 + i)
            labels = np.asarray(layout.labels.array)
            hu = np.asarray(case.image.array, np.float32).copy()
            record = MaisiRenderer._compose(hu, labels, condition_labels(labels), layout.density, spacing, seed)
            analysis = analyze_volume(Volume(hu, case.labels.affine, {}))
            for n, lesion in enumerate(layout.findings.lesions):
                found = min(analysis.lesions, default=None,
                            key=lambda m: float(np.linalg.norm(np.subtract(m.center_mm, lesion.center_mm))))
                rows.append({"seed": seed, "report": i + 1, "lobe": lesion.lobe, "mm": lesion.diameter_mm,
                             "target_hu": -750 + 800 * lesion.density,
                             "label_hu": record["lesions"][n]["calibrated_mean_hu"] if record.get("lesions") else None,
                             "found_lobe": found.lobe if found else None,
                             "found_mm": round(found.diameter_mm, 1) if found else None,
                             "found_hu": round(found.mean_hu, 1) if found else None,
                             "effusion": (layout.findings.effusion.side if layout.findings.effusion else None,
                                          analysis.effusion.side if analysis.effusion else None),
                             "emphysema": (layout.findings.emphysema.grade if layout.findings.emphysema else None,
                                           analysis.emphysema_grade)})
    lobe_ok = sum(r["found_lobe"] == r["lobe"] for r in rows)
    size_ok = sum(r["found_mm"] is not None and abs(r["found_mm"] - r["mm"]) <= 0.2 * r["mm"] for r in rows)
    hu_err = [abs(r["found_hu"] - r["target_hu"]) for r in rows if r["found_hu"] is not None]
    eff = [r["effusion"] for r in rows if r["effusion"][0]]
    emph = [r["emphysema"] for r in rows if r["emphysema"][0]]
    text = (f"# MAISI composition check on phantom CT ({shape} at {spacing} mm)\n\nCommand: "
            f"`{harness.command_line()}`\n\n"
            + harness.markdown_table(["seed", "report", "lobe", "mm", "target HU", "label HU", "found lobe",
                                      "found mm", "found HU", "effusion (asked, found)", "emphysema (asked, found)"],
                                     [[r["seed"], r["report"], r["lobe"], r["mm"], round(r["target_hu"]), r["label_hu"],
                                       r["found_lobe"], r["found_mm"], r["found_hu"], r["effusion"], r["emphysema"]]
                                      for r in rows])
            + f"\n\n- lesion found in the reported lobe: {lobe_ok}/{len(rows)}; size within 20 %: {size_ok}/{len(rows)}\n"
            f"- analyzer's lesion HU minus target: mean |error| {np.mean(hu_err):.0f} HU over {len(hu_err)} found\n"
            f"- effusion side found: {sum(a == b for a, b in eff)}/{len(eff)}; emphysema graded as asked: "
            f"{sum(a == b for a, b in emph)}/{len(emph)} (found at all: {sum(b is not None for _, b in emph)}/{len(emph)})\n")
    harness.write_json(args.out, {"compose_check": rows})
    harness.write_summary(args.out, text, name="compose_check.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
