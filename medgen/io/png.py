"""PNG previews of volumes: orthogonal slices in radiological display convention (PIL only).

Display convention (what a radiologist expects on screen):
- axial: patient's right on the image's left, anterior up (viewed from the feet);
- coronal: patient's right on the image's left, superior up (viewed from the front);
- sagittal: anterior on the image's left, superior up.
Panels are resampled to square display pixels (the finest voxel spacing, refined so the longest side
is at least `MIN_PANEL_PX`) and carry small orientation letters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medgen.io.atomic import atomic_path
from medgen.io.nifti import reorient
from medgen.volume import LUNG_WINDOW, Volume

MIN_PANEL_PX = 256
MAX_PANEL_PX = 768
PAD = 8  # pixels around and between panels
LABEL_H = 16  # band above each panel for its name / a grid row's caption
TITLE_H = 20  # band at the top for `title`
BACKGROUND = (0, 0, 0)
TEXT_COLOUR = (255, 255, 255)
MARKER_COLOUR = (255, 200, 0)  # orientation letters; not grey, so they never look like image content
# (name, letter on the image's left, letter on the image's right)
VIEWS = (("axial", "R", "L"), ("coronal", "R", "L"), ("sagittal", "A", "P"))


def _font(size: int = 12):
    return ImageFont.load_default(size=size)


def _display_slices(volume: Volume, center_mm) -> dict[str, tuple[np.ndarray, tuple[float, float]]]:
    """Slices of a RAS+ volume as (rows, cols) arrays in display orientation, with (row, col) spacing."""
    data = np.nan_to_num(np.asarray(volume.array, dtype=np.float32))
    sx, sy, sz = volume.spacing
    if center_mm is None:
        i, j, k = (n // 2 for n in data.shape)
    else:
        index = np.linalg.inv(volume.affine) @ np.append(np.asarray(center_mm, dtype=float), 1.0)
        if np.any(index[:3] < -0.5) or np.any(index[:3] > np.asarray(data.shape) - 0.5):
            raise ValueError(f"`center_mm` {tuple(center_mm)} lies outside the volume ({volume})")
        i, j, k = (int(np.clip(round(c), 0, n - 1)) for c, n in zip(index[:3], data.shape, strict=True))
    # RAS+ voxel axes: i -> patient's right, j -> anterior, k -> superior. Reverse i and j for display.
    return {
        "axial": (data[::-1, ::-1, k].T, (sy, sx)),  # rows: anterior -> posterior; cols: right -> left
        "coronal": (data[::-1, j, ::-1].T, (sz, sx)),  # rows: superior -> inferior; cols: right -> left
        "sagittal": (data[i, ::-1, ::-1].T, (sz, sy)),  # rows: superior -> inferior; cols: anterior -> posterior
    }


def display_spacing(volume: Volume) -> float:
    """Millimetres per display pixel: the finest voxel spacing, finer/coarser to fit the panel limits."""
    extents = np.asarray(volume.shape) * np.asarray(volume.spacing)
    spacing = min(volume.spacing)
    longest = float(extents.max())
    return float(np.clip(spacing, longest / MAX_PANEL_PX, longest / MIN_PANEL_PX))


def _panels(volume: Volume, window, center_mm, views) -> list[Image.Image]:
    canonical = reorient(volume, "RAS")
    slices = _display_slices(canonical, center_mm)
    pixel_mm = display_spacing(canonical)
    lo, hi = (float(w) for w in window)
    if not hi > lo:
        raise ValueError(f"`window` must be (low, high) with high > low, got {window}")
    font = _font(12)
    panels = []
    for name, left, right in views:
        array, (row_mm, col_mm) = slices[name]
        grey = (np.clip((array - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        size = (max(1, round(array.shape[1] * col_mm / pixel_mm)), max(1, round(array.shape[0] * row_mm / pixel_mm)))
        panel = Image.fromarray(grey, mode="L").resize(size, Image.Resampling.BILINEAR).convert("RGB")
        draw = ImageDraw.Draw(panel)
        middle = panel.height // 2
        draw.text((2, middle), left, fill=MARKER_COLOUR, font=font, anchor="lm")
        draw.text((panel.width - 2, middle), right, fill=MARKER_COLOUR, font=font, anchor="rm")
        panels.append(panel)
    return panels


def _paste_row(canvas: Image.Image, panels, names, top: int) -> None:
    draw, font, x = ImageDraw.Draw(canvas), _font(12), PAD
    for panel, name in zip(panels, names, strict=True):
        draw.text((x, top), name, fill=TEXT_COLOUR, font=font)
        canvas.paste(panel, (x, top + LABEL_H))
        x += panel.width + PAD


def _save_png(image: Image.Image, path, overwrite: bool) -> Path:
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        image.save(tmp, format="PNG")
    return path


def render_orthogonal(
    volume: Volume, path, *, window=LUNG_WINDOW, center_mm=None, title: str | None = None, overwrite=True
) -> Path:
    """Write a PNG of axial, coronal and sagittal slices (left to right) through one point.

    Args:
        volume: any voxel order (reoriented to RAS+ for display); HU.
        path: output PNG (written atomically).
        window: (low, high) HU mapped to black..white; lung window by default.
        center_mm: RAS+ world point the three slices go through; the volume's centre voxel if None.
        title: optional line of text above the panels.

    Size: width ``PAD + sum(panel widths + PAD)``, height ``[TITLE_H] + PAD + LABEL_H + max panel
    height + PAD``; a panel's pixels are `display_spacing` mm square.
    """
    panels = _panels(volume, window, center_mm, VIEWS)
    top = PAD + (TITLE_H if title else 0)
    width = PAD + sum(p.width + PAD for p in panels)
    height = top + LABEL_H + max(p.height for p in panels) + PAD
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    if title:
        ImageDraw.Draw(canvas).text((PAD, PAD), str(title), fill=TEXT_COLOUR, font=_font(14))
    _paste_row(canvas, panels, [name for name, _, _ in VIEWS], top)
    return _save_png(canvas, path, overwrite)


def render_grid(volumes: list[Volume], captions: list[str], path, *, window=LUNG_WINDOW, centers_mm=None) -> Path:
    """Write a PNG with one row per volume: its caption, then axial and coronal slices.

    Rows are stacked top to bottom in the order given; each volume gets its own display spacing.
    `centers_mm`: one RAS+ point (or None = the volume's centre) per volume for its slices to go through.
    """
    if len(volumes) == 0:
        raise ValueError("`volumes` must hold at least one volume")
    if len(captions) != len(volumes):
        raise ValueError(f"`captions` must have one entry per volume: got {len(captions)} for {len(volumes)} volumes")
    centers_mm = [None] * len(volumes) if centers_mm is None else list(centers_mm)
    if len(centers_mm) != len(volumes):
        raise ValueError(f"`centers_mm` must have one entry per volume: got {len(centers_mm)} for {len(volumes)} volumes")
    rows = [_panels(v, window, c, VIEWS[:2]) for v, c in zip(volumes, centers_mm, strict=True)]
    row_heights = [LABEL_H + LABEL_H + max(p.height for p in panels) + PAD for panels in rows]
    width = max(PAD + sum(p.width + PAD for p in panels) for panels in rows)
    canvas = Image.new("RGB", (width, PAD + sum(row_heights)), BACKGROUND)
    draw, top = ImageDraw.Draw(canvas), PAD
    for panels, caption, row_height in zip(rows, captions, row_heights, strict=True):
        draw.text((PAD, top), str(caption), fill=TEXT_COLOUR, font=_font(13))
        _paste_row(canvas, panels, [name for name, _, _ in VIEWS[:2]], top + LABEL_H)
        top += row_height
    return _save_png(canvas, path, overwrite=True)
