"""Speed and memory per stage, and a ratio against MONAI's stock ``LatentDiffusionInferer`` loop.

Stages of one text -> NIfTI generation: encode text (cache cleared), denoise (prepare noise + sampler),
decode (VAE, tiled when large), write (NIfTI + sidecar + PNG preview).  Memory: on CUDA the peak of
``torch.cuda.max_memory_allocated`` above the stage's start; on the CPU the peak resident set size
above the stage's start, sampled every 10 ms from /proc/self/statm by a background thread after freed
heap pages are handed back (glibc ``malloc_trim``); ru_maxrss is a process-lifetime high-water mark and
cannot isolate a stage run after other work.  CPU figures are a lower bound (allocator caching).

Baseline: MONAI's ``LatentDiffusionInferer.sample`` with the same UNet (wrapped so that it takes
``(x, timesteps, context)``), the same autoencoder, scheduler, steps and initial noise; it includes
the decode, so it is compared with our denoise + decode.  MONAI's loop has no density or composable
guidance, so the like-for-like pairs are: ours unguided vs stock without CFG (1 UNet branch), ours with
text guidance only vs stock with ``cfg`` (2 branches); ours fully guided (3 branches) is also listed.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["MemoryMeter", "StockUNetAdapter", "benchmark_speed"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc), so that a stage's RSS growth is not hidden by reuse."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: fall back to the high-water mark (coarser)
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MemoryMeter:
    """``with meter.stage() as m: ...`` -> ``m["peak_mb"]``: peak memory above the stage's start (MB)."""

    def __init__(self, device: torch.device, interval_s: float = 0.01):
        self.device, self.interval_s = device, interval_s

    @contextmanager
    def stage(self):
        record = {"peak_mb": 0.0}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            yield record
            torch.cuda.synchronize(self.device)
            record["peak_mb"] = (torch.cuda.max_memory_allocated(self.device) - start) / 2**20
            return
        _trim_heap()
        start = _rss_bytes()
        peak = [start]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_bytes())
                stop.wait(self.interval_s)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield record
        finally:
            stop.set()
            thread.join()
            peak[0] = max(peak[0], _rss_bytes())
            record["peak_mb"] = (peak[0] - start) / 2**20


class StockUNetAdapter(nn.Module):
    """Our `ConditionalUNet` behind MONAI's ``diffusion_model(x, timesteps=, context=)`` call.

    Closes over the attention mask (1, L), pooled text (1, D) and density (1,), broadcast to the batch
    MONAI passes (B, or 2B with its classifier-free guidance).
    """

    def __init__(self, unet, attention_mask, pooled, density):
        super().__init__()
        self.unet = unet
        self.attention_mask, self.pooled, self.density = attention_mask, pooled, density

    def forward(self, x, timesteps, context=None, **_):
        n = x.shape[0]
        t = timesteps.reshape(-1).expand(n) if timesteps.numel() == 1 else timesteps
        return self.unet(x, t.to(x.device), token_states=context, attention_mask=self.attention_mask.expand(n, -1),
                         pooled=self.pooled.expand(n, -1), density=self.density.expand(n))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, meter: MemoryMeter):
    with meter.stage() as mem:
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        elapsed = time.perf_counter() - start
    return out, elapsed, mem["peak_mb"]


def _one_generation(pipe, report, request_kwargs, out_dir: Path, meter, device) -> dict:
    """Run the pipeline's numbered stages one by one; seconds and peak MB per stage."""
    request = pipe.check_inputs(report, **request_kwargs)
    getattr(pipe.text_encoder, "clear_cache", lambda: None)()  # a cached encoding would time a dictionary look-up
    stages = {}
    (enc, null), stages["encode_text_s"], stages["encode_text_mb"] = _timed(
        lambda: pipe.encode_report(request.reports), device, meter)

    def denoise():
        latent_shape, generator = pipe.prepare_latents(request)
        return pipe.denoise(request, enc, null, latent_shape, generator, False)

    latents, stages["denoise_s"], stages["denoise_mb"] = _timed(denoise, device, meter)
    hu, stages["decode_s"], stages["decode_mb"] = _timed(lambda: pipe.decode(latents), device, meter)
    result = pipe.wrap(request, hu, latents, elapsed_s=0.0)[0]
    _, stages["write_s"], stages["write_mb"] = _timed(
        lambda: result.save(out_dir / "bench.nii.gz", overwrite=True), device, meter)
    stages["total_s"] = sum(v for k, v in stages.items() if k.endswith("_s"))
    return stages


def _stock_sample(pipe, report, request_kwargs, *, cfg: float | None, device, meter):
    """MONAI ``LatentDiffusionInferer.sample`` with our networks; seconds and peak MB (denoise + decode)."""
    from monai.inferers import LatentDiffusionInferer

    request = pipe.check_inputs(report, **request_kwargs)
    enc = pipe.text_encoder(request.reports)
    density = torch.tensor([request.densities[0] if request.densities else float("nan")], device=device)
    adapter = StockUNetAdapter(pipe.unet, enc.attention_mask.to(device), enc.pooled.to(device), density)
    latent_shape, generator = pipe.prepare_latents(request)
    noise = torch.randn(latent_shape, generator=generator).to(device)
    scheduler = pipe.scheduler
    inferer = LatentDiffusionInferer(scheduler, scale_factor=float(pipe.config["scale_factor"]))

    def run():
        scheduler.set_timesteps(request.num_inference_steps, device=device)
        with torch.no_grad():
            return inferer.sample(noise, pipe.autoencoder, adapter, scheduler=scheduler,
                                  conditioning=enc.token_states.to(device), mode="crossattn", verbose=False, cfg=cfg)

    image, elapsed, peak = _timed(run, device, meter)
    if not torch.isfinite(image).all():
        raise RuntimeError("MONAI's stock sampler produced non-finite values")
    return elapsed, peak


def benchmark_speed(pipe, *, report: str, shapes, steps: int | None = None, repeats: int = 3, density: float = 0.5,
                    spacing_for=None) -> dict:
    """Time and memory per stage at each cube side in `shapes`, plus the stock-MONAI ratio.

    Args:
        pipe: a loaded `ReportToVolumePipeline` (on its device).
        report: report text used for every run.
        shapes: cube sides, e.g. (64,) on the CPU or (64, 128, 256) on a GPU.
        steps: sampler steps (None = the model's default).
        repeats: timed rounds after one warm-up round; each round runs every configuration once
            (interleaved). Stage figures are medians; ``min_total_s`` is the fastest run; the ratios
            use the fastest runs (``ratio_vs_monai``) and the medians (``ratio_vs_monai_median``).
        density: the density given to the guided runs.
        spacing_for: side -> spacing (mm); default keeps the model's field of view.
    """
    device = pipe.device
    meter = MemoryMeter(device)
    base_shape, base_spacing = pipe.config["shape"], pipe.config["spacing"]
    guidance = pipe.config["guidance"]
    out = {"device": str(device), "torch_threads": torch.get_num_threads(), "repeats": int(repeats), "shapes": {}}
    with tempfile.TemporaryDirectory(prefix="medgen-bench.") as tmp:
        for side in shapes:
            spacing = (spacing_for(side) if spacing_for else
                       [float(sp) * float(sh) / side for sp, sh in zip(base_spacing, base_shape, strict=True)])
            common = {"shape": (side,) * 3, "spacing": spacing, "num_inference_steps": steps}
            configs = {
                "guided": {**common, "density": density},  # 3 branches (default weights)
                "text_guided": common,  # no density: 2 branches
                "unguided": {**common, "density": density, "guidance_scale": 1.0,
                             "density_guidance_scale": 1.0},  # 1 branch
            }
            row: dict = {"spacing_mm": spacing, "steps": pipe.check_inputs(report, **common).num_inference_steps}
            stock = {"monai_stock": (configs["unguided"], None),
                     "monai_stock_cfg": (configs["text_guided"], float(guidance["text"]))}
            runs: dict[str, list] = {name: [] for name in (*configs, *stock)}
            try:
                # interleaved (every configuration once per round) so that drifting load hits all alike;
                # round 0 is a warm-up
                for round_ in range(int(repeats) + 1):
                    for name, kwargs in configs.items():
                        runs[name].append(_one_generation(pipe, report, kwargs, Path(tmp), meter, device))
                    for name, (kwargs, cfg) in stock.items():
                        seconds, peak = _stock_sample(pipe, report, kwargs, cfg=cfg, device=device, meter=meter)
                        runs[name].append({"denoise_decode_s": seconds, "peak_mb": peak})
                    if round_ == 0:
                        runs = {name: [] for name in runs}
            except torch.cuda.OutOfMemoryError as err:  # a 256^3 run may not fit: record it, go on
                row["error"] = f"out of memory: {str(err).splitlines()[0]}"
                torch.cuda.empty_cache()
                out["shapes"][str(side)] = row
                continue
            for name, values in runs.items():
                row[name] = {k: float(statistics.median(r[k] for r in values)) for k in values[0]}
                row[name]["min_total_s"] = float(min(r.get("total_s", r.get("denoise_decode_s")) for r in values))
            # ratios on the fastest run of each (the least disturbed by other processes) and on medians
            ours = {k: min(r["denoise_s"] + r["decode_s"] for r in runs[k]) for k in configs}
            base = {k: min(r["denoise_decode_s"] for r in runs[k]) for k in stock}
            ours_med = {k: row[k]["denoise_s"] + row[k]["decode_s"] for k in configs}
            row["ratio_vs_monai"] = {
                "unguided_vs_stock": ours["unguided"] / base["monai_stock"],
                "text_guided_vs_stock_cfg": ours["text_guided"] / base["monai_stock_cfg"],
                "guided_vs_stock": ours["guided"] / base["monai_stock"],
            }
            row["ratio_vs_monai_median"] = {
                "unguided_vs_stock": ours_med["unguided"] / row["monai_stock"]["denoise_decode_s"],
                "text_guided_vs_stock_cfg": ours_med["text_guided"] / row["monai_stock_cfg"]["denoise_decode_s"],
                "guided_vs_stock": ours_med["guided"] / row["monai_stock"]["denoise_decode_s"],
            }
            out["shapes"][str(side)] = row
    out["ok"] = all("error" not in r for r in out["shapes"].values()) and bool(out["shapes"])
    out["seconds_per_volume"] = {s: r["guided"]["total_s"] for s, r in out["shapes"].items() if "guided" in r}
    if not np.all([np.isfinite(v) for v in out["seconds_per_volume"].values()]):
        raise RuntimeError("non-finite timing")
    return out
