"""GPU benchmark: time and peak memory of medgen's cascade against MONAI's stock `LatentDiffusionInferer`
with the same networks, at 256^3 and 512^3 output.

    .venv/bin/python benchmarks/bench_gpu.py [--model DIR] [--sizes 256 512] [--steps 25] [--device cuda]
        [--bf16] [--channels-last] [--compile] [--out benchmarks/results/gpu]
    .venv/bin/python benchmarks/bench_gpu.py --quick    # smoke run: 128^3, 2 steps (on the CPU without CUDA)

Rows per size:
- medgen: `medgen generate`'s path — render at the native grid with guidance, then the x2 cascade stages
  tile by tile (bf16 autocast / channels-last / torch.compile when asked).
- MONAI stock: `LatentDiffusionInferer.sample` on a latent of the output size / the latent factor, with the
  same autoencoder and UNet (conditional branch only: the stock inferer has no classifier-free guidance),
  decoded in one piece. It tiles nothing, so it shows what the plain recipe costs at that size.
  It cannot join a layout, so a layout-grounded model (the default) gets no stock row.
Where CUDA is absent the table says "not measured" (unless `--device cpu` is asked for, e.g. a smoke run
at small sizes). MAISI's published figures are listed beside it for scale.
"""

from __future__ import annotations

import time
from pathlib import Path

import harness
import torch

REPORT = "A 35 mm solid mass in the right upper lobe with spiculated margins. Small left pleural effusion."
MAISI_PUBLISHED = "MAISI (Guo et al. 2024): 512x512x512 in 48-51 s on one A100 at 22.8-45.3 GB peak"


class _StockAdapter(torch.nn.Module):
    """Our UNet behind the stock call signature ``model(x, timesteps=, context=)``; pooled text and density
    are fixed for the run."""

    def __init__(self, unet, encoding):
        super().__init__()
        self.unet, self.encoding = unet, encoding

    def forward(self, x, timesteps, context=None, **_):
        e = self.encoding
        return self.unet(x, timesteps, token_states=e.token_states, attention_mask=e.attention_mask,
                         pooled=e.pooled, density=None)


def _peak_gib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _reset(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def run_medgen(pipe, size: int, steps: int, device, bf16: bool) -> dict:
    _reset(device)
    started = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        pipe(REPORT, shape=(size,) * 3, num_inference_steps=steps, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"wall_s": time.perf_counter() - started, "peak_gib": _peak_gib(device)}


def run_stock(pipe, size: int, steps: int, device, bf16: bool) -> dict:
    from monai.inferers import LatentDiffusionInferer

    factor = pipe.latent_factor
    channels = int(pipe.unet.config["in_channels"])
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps)
    inferer = LatentDiffusionInferer(scheduler, scale_factor=float(pipe.config["scale_factor"]))
    model = _StockAdapter(pipe.unet, pipe.text_encoder([REPORT]))
    noise = torch.randn(1, channels, *(size // factor,) * 3, device=device)
    _reset(device)
    started = time.perf_counter()
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            inferer.sample(noise, autoencoder_model=pipe.autoencoder, diffusion_model=model, scheduler=scheduler,
                           verbose=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return {"wall_s": time.perf_counter() - started, "peak_gib": _peak_gib(device)}
    except torch.OutOfMemoryError:
        return {"wall_s": None, "peak_gib": None, "error": "out of memory"}


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# GPU benchmark: medgen cascade vs MONAI stock LatentDiffusionInferer", "",
             f"Command: `{meta['command']}`. Device: {meta['device']}. {meta['note']}", "",
             "| output | medgen (s) | medgen peak (GiB) | MONAI stock (s) | MONAI stock peak (GiB) |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        def cell(block, key):
            value = block.get(key) if block else None
            return block.get("error", "not measured") if value is None and block else (
                "not measured" if value is None else f"{value:.1f}" if key == "wall_s" else f"{value:.2f}")
        lines.append(f"| {r['size']}³ | {cell(r.get('medgen'), 'wall_s')} | {cell(r.get('medgen'), 'peak_gib')} | "
                     f"{cell(r.get('stock'), 'wall_s')} | {cell(r.get('stock'), 'peak_gib')} |")
    lines += ["", f"For scale: {MAISI_PUBLISHED}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = harness.parser("gpu", __doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="channels_last_3d memory format")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--skip-stock", action="store_true", help="medgen rows only")
    args = harness.parse(parser, quick={"sizes": [128], "steps": 2,
                                        "device": "cuda" if torch.cuda.is_available() else "cpu"})
    meta = {"command": harness.command_line(), "note": ""}
    rows = [{"size": s} for s in args.sizes]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        meta.update(device="none (CUDA not available on this machine)",
                    note="No GPU was lent to this run: every GPU row is not measured.")
    else:
        from medgen.pipelines import ReportToVolumePipeline
        from medgen.pipelines.default_model import resolve_model_path

        device = torch.device(args.device)
        pipe = ReportToVolumePipeline.from_pretrained(resolve_model_path(args.model), device=device)
        if args.channels_last:
            pipe.unet.to(memory_format=torch.channels_last_3d)
            pipe.autoencoder.to(memory_format=torch.channels_last_3d)
        if args.compile:
            pipe.unet.unet = torch.compile(pipe.unet.unet)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        meta.update(device=name, note=f"bf16 {args.bf16}, channels-last {args.channels_last}, "
                                      f"compile {args.compile}, {args.steps} steps.")
        for row in rows:
            row["medgen"] = run_medgen(pipe, row["size"], args.steps, device, args.bf16)
            if getattr(pipe, "layout_grounded", False):  # as `medgen evaluate`'s speed section: no stock row
                row["stock"] = {"wall_s": None, "peak_gib": None,
                                "error": "n/a: MONAI's stock inferer cannot join a layout"}
            elif not args.skip_stock:
                row["stock"] = run_stock(pipe, row["size"], args.steps, device, args.bf16)
            print(row, flush=True)
    harness.write_json(args.out, {"meta": meta, "rows": rows})
    harness.write_summary(args.out, markdown(rows, meta))


if __name__ == "__main__":
    main()
