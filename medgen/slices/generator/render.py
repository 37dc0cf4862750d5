"""PNG grid of preview candidates: one lung-window panel per candidate and the layout slice they were drawn
from, under a title that says SYNTHETIC and what the key slice shows. Axial display: patient right on the
image's left, anterior up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medgen.io.png import PAD, TEXT_COLOUR, _font, _save_png
from medgen.layout.labels import FIRST_LESION_LABEL
from medgen.volume import LUNG_WINDOW

PANEL_PX = 256
TITLE_H = 36
# layout panel colours: lesions red, fluid blue, other labels grey by value
LESION_RGB, FLUID_RGB = (230, 60, 60), (70, 130, 230)


def _grey(hu: np.ndarray, window) -> Image.Image:
    lo, hi = (float(w) for w in window)
    grey = (np.clip((hu - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(grey, mode="L").resize((PANEL_PX, PANEL_PX), Image.Resampling.BILINEAR).convert("RGB")


def _layout_panel(labels: np.ndarray) -> Image.Image:
    from medgen.findings import LABELS

    rgb = np.zeros((*labels.shape, 3), np.uint8)
    rgb[labels > 0] = np.clip(40 + (labels[labels > 0, None].astype(int) * 17) % 160, 0, 255).astype(np.uint8)
    rgb[labels == LABELS["effusion"]] = FLUID_RGB
    rgb[labels >= FIRST_LESION_LABEL] = LESION_RGB
    return Image.fromarray(rgb, mode="RGB").resize((PANEL_PX, PANEL_PX), Image.Resampling.NEAREST)


def preview_png(result, path, *, window=LUNG_WINDOW, overwrite: bool = False) -> Path:
    """Write the candidates of a `PreviewResult` side by side, then its layout slice."""
    panels = [_grey(hu, window) for hu in result.hu] + [_layout_panel(result.labels)]
    names = [f"candidate {i + 1}" for i in range(len(result.hu))] + ["layout"]
    width = PAD + len(panels) * (PANEL_PX + PAD)
    canvas = Image.new("RGB", (width, TITLE_H + 16 + PANEL_PX + PAD), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((PAD, 4), f"SYNTHETIC preview (medgen), seed {result.seeds[0]}, axial z = "
                        f"{result.slice_findings['position_mm']:g} mm", fill=TEXT_COLOUR, font=_font(13))
    draw.text((PAD, 20), result.caption, fill=TEXT_COLOUR, font=_font(12))
    for i, (panel, name) in enumerate(zip(panels, names, strict=True)):
        x = PAD + i * (PANEL_PX + PAD)
        draw.text((x, TITLE_H), name, fill=TEXT_COLOUR, font=_font(12))
        canvas.paste(panel, (x, TITLE_H + 16))
        draw.text((x + 3, TITLE_H + 18), "R", fill=(255, 200, 0), font=_font(11))
        draw.text((x + PANEL_PX - 10, TITLE_H + 18), "L", fill=(255, 200, 0), font=_font(11))
    return _save_png(canvas, Path(path), overwrite)
