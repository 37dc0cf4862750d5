"""PNG previews: size follows the geometry; the patient's right is on the image's left."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medgen.io.dicom import LPS
from medgen.io.png import LABEL_H, PAD, TITLE_H, render_grid, render_orthogonal
from medgen.volume import Volume, make_affine

SHAPE = (40, 30, 20)
SPACING = (1.0, 1.0, 2.0)  # extents 40 x 30 x 40 mm; longest 40 mm -> 256 display pixels


def phantom(affine=None) -> Volume:
    """Air with one bright block on the patient's right (high i), anterior (high j), superior (high k)."""
    array = np.full(SHAPE, -1000.0, np.float32)
    array[30:36, 20:26, 12:16] = 1000.0
    return Volume(array, make_affine(SHAPE, SPACING) if affine is None else affine)


def bright_columns(png, box):
    """Column/row indices (relative to `box`) of white grey pixels: image content, not the coloured letters."""
    rgb = np.asarray(Image.open(png).convert("RGB").crop(box)).astype(int)
    white = (rgb.min(axis=2) >= 250) & (rgb.max(axis=2) - rgb.min(axis=2) == 0)
    rows, cols = np.nonzero(white)
    return rows, cols


def axial_box(title: bool):
    top = PAD + (TITLE_H if title else 0) + LABEL_H
    return (PAD, top, PAD + 256, top + 192)  # 40 x 30 mm at 40/256 mm per pixel


@pytest.mark.parametrize("voxel_order", ["RAS", "LPS"])
def test_orthogonal_png_size_and_laterality(tmp_path, voxel_order):
    volume = phantom()
    if voxel_order == "LPS":  # same anatomy stored in another voxel order: the picture must not change
        flipped = Volume(volume.array[::-1, ::-1, :].copy(), volume.affine.copy())
        flipped.affine[:3, :3] = (LPS @ volume.affine)[:3, :3]
        flipped.affine[:3, 3] = volume.world_coordinates((SHAPE[0] - 1, SHAPE[1] - 1, 0))
        assert flipped.orientation == "LPS"
        volume = flipped
    path = render_orthogonal(volume, tmp_path / "p.png", title="SYNTHETIC test",
                             center_mm=phantom().world_coordinates((32, 22, 13)))
    image = Image.open(path)
    assert image.format == "PNG"
    # panels: axial 256x192, coronal 256x256, sagittal 192x256
    assert image.size == (PAD + 256 + PAD + 256 + PAD + 192 + PAD, PAD + TITLE_H + LABEL_H + 256 + PAD)
    rows, cols = bright_columns(path, axial_box(title=True))
    assert len(cols) > 0
    assert cols.max() < 256 / 2, "patient's right must be on the image's left"
    assert rows.max() < 192 / 2, "anterior must be up"
    coronal_top = PAD + TITLE_H + LABEL_H
    rows, cols = bright_columns(path, (PAD + 256 + PAD, coronal_top, PAD + 512 + PAD, coronal_top + 256))
    assert cols.max() < 256 / 2 and rows.max() < 256 / 2, "coronal: right on the left, superior up"


def test_centre_default_misses_offcentre_marker_and_bad_centre_fails(tmp_path):
    path = render_orthogonal(phantom(), tmp_path / "c.png")
    rows, _ = bright_columns(path, axial_box(title=False))
    assert len(rows) == 0  # the centre axial slice (k = 10) does not cut the block (k = 12..15)
    with pytest.raises(ValueError, match="center_mm"):
        render_orthogonal(phantom(), tmp_path / "d.png", center_mm=(0.0, 0.0, 500.0))


def test_grid_one_row_per_volume(tmp_path):
    small = Volume(np.zeros((20, 20, 10), np.float32), make_affine((20, 20, 10), 2.0))
    path = render_grid([phantom(), small], ["right upper nodule", "empty"], tmp_path / "grid.png")
    width, height = Image.open(path).size
    # row 1: axial 256x192 + coronal 256x256; row 2 (40 x 40 x 20 mm): 256x256 + 256x128
    assert width == PAD + 256 + PAD + 256 + PAD
    assert height == PAD + (2 * LABEL_H + 256 + PAD) * 2
    with pytest.raises(ValueError, match="captions"):
        render_grid([small], ["a", "b"], tmp_path / "bad.png")


def test_grid_rows_slice_through_their_own_centres(tmp_path):
    marker = phantom().world_coordinates((32, 22, 13))
    centred = render_grid([phantom()], ["centre"], tmp_path / "c.png")
    through = render_grid([phantom()], ["marker"], tmp_path / "m.png", centers_mm=[marker])
    top = PAD + 2 * LABEL_H  # caption band, then the panel-name band
    box = (PAD, top, PAD + 256, top + 192)
    assert len(bright_columns(centred, box)[0]) == 0  # the centre slice misses the block
    rows, cols = bright_columns(through, box)
    assert len(cols) > 0 and cols.max() < 256 / 2  # the block, on the patient's right
    with pytest.raises(ValueError, match="centers_mm"):
        render_grid([phantom()], ["a"], tmp_path / "bad.png", centers_mm=[marker, marker])
