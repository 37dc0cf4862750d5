"""Write captioned slices to a folder: a lung-window PNG and an npz per slice, one ``captions.jsonl``.

Layout of the folder (written to a temporary sibling and renamed, so it is never half-written)::

    captions.jsonl            {"id", "png", "npz", "caption_en", "caption_zh", "findings"} per slice
    slices/s00000_axial.png   the slice in a lung window (display orientation, square pixels)
    slices/s00000_axial.npz   image (1, S, S) float32, hu (H, W) float32, label2d (H, W) uint8, spacing_mm
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from medgen.io.atomic import atomic_dir
from medgen.volume import LUNG_WINDOW

CAPTIONS_NAME = "captions.jsonl"
PNG_MIN_PX = 256  # small slices are enlarged so a preview is readable


def slice_png(sample, window=LUNG_WINDOW) -> Image.Image:
    """The slice's HU in `window` as an 8-bit image with square pixels (at least `PNG_MIN_PX` tall)."""
    lo, hi = (float(w) for w in window)
    grey = (np.clip((sample.hu - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    rows, cols = sample.hu.shape
    row_mm, col_mm = sample.spacing_mm
    pixel_mm = min(row_mm, col_mm, max(rows * row_mm, cols * col_mm) / PNG_MIN_PX)
    size = (max(1, round(cols * col_mm / pixel_mm)), max(1, round(rows * row_mm / pixel_mm)))
    return Image.fromarray(grey, mode="L").resize(size, Image.Resampling.BILINEAR)


def write_slice_folder(samples, out, *, overwrite: bool = False) -> Path:
    """Write `samples` (`SliceSample`s) to the folder `out`; returns the path of ``captions.jsonl``."""
    out = Path(out)
    if not samples:
        raise ValueError("no slices to write")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "slices").mkdir()
        lines = []
        for number, sample in enumerate(samples):
            name = f"s{number:05d}_{sample.findings['view']}"
            slice_png(sample).save(tmp / "slices" / f"{name}.png", format="PNG")
            np.savez_compressed(
                tmp / "slices" / f"{name}.npz",
                image=sample.image,
                hu=sample.hu,
                label2d=sample.label2d,
                spacing_mm=np.asarray(sample.spacing_mm, np.float32),
            )
            lines.append(
                json.dumps(
                    {
                        "id": name,
                        "png": f"slices/{name}.png",
                        "npz": f"slices/{name}.npz",
                        "caption_en": sample.caption_en,
                        "caption_zh": sample.caption_zh,
                        "findings": sample.findings,
                    },
                    ensure_ascii=False,
                )
            )
        (tmp / CAPTIONS_NAME).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out / CAPTIONS_NAME
