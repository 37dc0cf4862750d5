"""2D slices of chest CT volumes with captions of what each slice shows.

Slices are cut from a volume with its label map, findings and lesion instance map (`medgen.slices.sources`
builds them from phantoms or manifest rows). For each slice the lesions it cuts are measured in the slice
itself (area-equivalent diameter and long axis in mm, from the lesion's pixels), the effusion side from where
the fluid pixels lie, emphysema from the slice's low-attenuation area (LAA-950) when the subject has it.

2D arrays are in radiological display orientation: axial rows run anterior -> posterior and columns patient
right -> left; coronal rows superior -> inferior, columns right -> left. `SliceSample.image` is the slice
through MONAI transforms (HU window -> [-1, 1], clipped; resized to `size` x `size`); `hu` and `label2d`
stay on the volume's native in-plane grid (the measurements are made there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import pdist

from medgen.analysis.findings import LAA_HU
from medgen.findings import LABELS, LOBE_LABELS, Findings
from medgen.slices.captions import caption_en, caption_zh
from medgen.volume import HU_WINDOW, Volume, density_class

VIEW_AXIS = {"axial": 2, "coronal": 1}  # RAS+ voxel axis the slice is normal to
LUNG_VALUES = list(LOBE_LABELS.values())


@dataclass
class SliceConfig:
    """How phantom volumes are built and cut.

    Args:
        shape, spacing: phantom grid (X, Y, Z) voxels and mm; the default is 320 mm square in-plane at 2.5 mm.
        size: side of `SliceSample.image` in pixels.
        window: HU mapped to [-1, 1] (clipped) for `SliceSample.image`.
        min_lesion_px: pixels a lesion needs in a slice to be captioned (a lesion's tip is not described).
        min_effusion_px: fluid pixels on one side for the slice to show an effusion on that side.
        emphysema_laa_percent: share of the slice's lung below -950 HU for emphysema to show (normal lung: 0).
    """

    shape: tuple[int, int, int] = (128, 128, 64)
    spacing: tuple[float, float, float] = (2.5, 2.5, 5.0)
    size: int = 128
    window: tuple[float, float] = HU_WINDOW
    min_lesion_px: int = 3
    min_effusion_px: int = 10
    emphysema_laa_percent: float = 1.0

    def __post_init__(self):
        if self.size < 8:
            raise ValueError(f"`size` must be >= 8 pixels, got {self.size}")
        if not self.window[1] > self.window[0]:
            raise ValueError(f"`window` must be (low, high) HU with high > low, got {self.window}")


@dataclass
class SliceSample:
    """One captioned slice.

    Args:
        image: float32 (1, size, size), the slice through `slice_transform` (window -> [-1, 1]).
        hu: float32 (H, W) HU on the native in-plane grid, display orientation.
        label2d: uint8 (H, W) label map (values: `medgen.findings.LABELS`), same grid.
        caption_en, caption_zh: what the slice shows.
        findings: view, index, position (``z_mm`` for axial, ``y_mm`` for coronal), lesions cut (lobe, side,
            type, size_mm, long_axis_mm, diameter_mm of the whole lesion, mean_hu), effusion side,
            emphysema grade, normal, subject.
        spacing_mm: (row, column) pixel size of `hu` / `label2d`.
    """

    image: np.ndarray
    hu: np.ndarray
    label2d: np.ndarray
    caption_en: str
    caption_zh: str
    findings: dict
    spacing_mm: tuple[float, float]

    def caption(self, language: str) -> str:
        if language not in ("en", "zh"):
            raise ValueError(f"`language` must be 'en' or 'zh', got {language!r}")
        return self.caption_en if language == "en" else self.caption_zh


def slice_transform(window=HU_WINDOW, size: int = 128):
    """MONAI chain: 2D HU array (H, W) -> float32 tensor (1, size, size) in [-1, 1] (window clipped)."""
    import torch
    from monai.transforms import Compose, EnsureChannelFirst, EnsureType, Resize, ScaleIntensityRange

    return Compose(
        [
            EnsureChannelFirst(channel_dim="no_channel"),
            ScaleIntensityRange(
                a_min=float(window[0]), a_max=float(window[1]), b_min=-1.0, b_max=1.0, clip=True
            ),
            Resize(
                (size, size), mode="bilinear", anti_aliasing=True
            ),  # anti-aliasing only acts when shrinking
            EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    )


def _check_view(view: str) -> int:
    if view not in VIEW_AXIS:
        raise ValueError(f"`view` must be one of {tuple(VIEW_AXIS)}, got {view!r}")
    return VIEW_AXIS[view]


def _display(plane: np.ndarray) -> np.ndarray:
    """Raw index plane (i, j) or (i, k) -> display orientation (both axes reversed, transposed)."""
    return np.ascontiguousarray(plane[::-1, ::-1].T)


def _plane_world(affine: np.ndarray, axis: int, index: int, mask2d: np.ndarray) -> np.ndarray:
    """RAS+ world mm (N, 3) of the True pixels of a raw index plane."""
    idx = np.argwhere(mask2d).astype(float)
    full = np.insert(idx, axis, float(index), axis=1)
    return full @ affine[:3, :3].T + affine[:3, 3]


def _sizes(points_mm: np.ndarray, pixel_area: float, pixel_mm: float) -> tuple[float, float]:
    """(area-equivalent diameter, long axis) in mm of a set of pixels."""
    equivalent = 2.0 * np.sqrt(len(points_mm) * pixel_area / np.pi)
    if len(points_mm) < 2:
        return float(equivalent), float(pixel_mm)
    return float(equivalent), float(pdist(points_mm).max() + pixel_mm)  # + one pixel: centres to edges


def cross_sections(ids: np.ndarray, axis: int) -> np.ndarray:
    """(n_lesions + 1, n_slices) pixel count of each lesion id (row 0 unused) in each slice along `axis`."""
    n = int(ids.max()) if ids.size else 0
    counts = np.zeros((n + 1, ids.shape[axis]), np.int64)
    for lesion in range(1, n + 1):
        other = tuple(a for a in range(3) if a != axis)
        counts[lesion] = (ids == lesion).sum(axis=other)
    return counts


def key_slice_index(labels: np.ndarray, lesion_ids: np.ndarray, view: str = "axial") -> int:
    """The slice through the largest lesion cross-section; else through the most pleural fluid; else mid-lung.

    Args:
        labels: (X, Y, Z) label map; lesion_ids: (X, Y, Z) instance map (n = lesion n, 0 elsewhere).
    """
    axis = _check_view(view)
    counts = cross_sections(lesion_ids, axis)
    if counts[1:].size and counts[1:].max() > 0:
        return int(np.unravel_index(np.argmax(counts[1:]), counts[1:].shape)[1])
    other = tuple(a for a in range(3) if a != axis)
    fluid = (labels == LABELS["effusion"]).sum(axis=other)
    if fluid.max() > 0:
        return int(np.argmax(fluid))
    lung = lung_indices(labels, view)
    if not lung.size:
        raise ValueError("the label map holds no lung: no key slice to choose")
    return int(round((lung[0] + lung[-1]) / 2))


def lung_indices(labels: np.ndarray, view: str = "axial") -> np.ndarray:
    """Slice indices along the view's axis that contain lung."""
    axis = _check_view(view)
    return np.flatnonzero(np.isin(labels, LUNG_VALUES).any(axis=tuple(a for a in range(3) if a != axis)))


def extract_slice(
    image: Volume,
    labels: Volume,
    findings: Findings,
    lesion_ids: np.ndarray,
    *,
    view: str = "axial",
    index: int,
    config: SliceConfig | None = None,
    subject=None,
    transform=None,
) -> SliceSample:
    """Cut one slice, measure what it shows and caption it.

    Args:
        image: HU volume (RAS+ voxel order, as `make_phantom` and `load_volume` give).
        labels: label map on the same grid.
        lesion_ids: (X, Y, Z) instance map, n -> ``findings.lesions[n - 1]``.
        view: "axial" or "coronal"; index: slice index along the view's axis.
        subject: recorded in the findings dict (phantom seed or manifest id).
        transform: a `slice_transform` to reuse (built from `config` when None).
    """
    config = config or SliceConfig()
    axis = _check_view(view)
    hu3, lab3 = np.asarray(image.array), np.asarray(labels.array)
    if hu3.shape != lab3.shape or lesion_ids.shape != hu3.shape:
        raise ValueError(
            f"image {hu3.shape}, labels {lab3.shape} and lesion ids {lesion_ids.shape} differ in shape"
        )
    if not 0 <= index < hu3.shape[axis]:
        raise ValueError(f"`index` must be in [0, {hu3.shape[axis] - 1}] for the {view} view, got {index}")
    hu = np.take(hu3, index, axis=axis).astype(np.float32)
    lab = np.take(lab3, index, axis=axis).astype(np.uint8)
    ids = np.take(lesion_ids, index, axis=axis)
    affine = image.affine
    in_plane = [s for a, s in enumerate(image.spacing) if a != axis]
    pixel_area, pixel_mm = float(np.prod(in_plane)), float(np.mean(in_plane))

    lesions = []
    for n in np.unique(ids[ids > 0]):
        if n > len(findings.lesions):
            raise ValueError(
                f"lesion id {n} in the instance map, but the findings list {len(findings.lesions)} lesions"
            )
        mask = ids == n
        if mask.sum() < config.min_lesion_px:
            continue
        truth = findings.lesions[int(n) - 1]
        size, long_axis = _sizes(_plane_world(affine, axis, index, mask), pixel_area, pixel_mm)
        lesions.append(
            {
                "lesion": int(n),
                "lobe": truth.lobe,
                "side": truth.side,
                "type": density_class(truth.density),
                "density": float(truth.density),
                "size_mm": round(size, 1),
                "long_axis_mm": round(long_axis, 1),
                "diameter_mm": float(truth.diameter_mm),
                "mean_hu": round(float(hu[mask].mean()), 1),
            }
        )
    lesions.sort(key=lambda item: -item["size_mm"])

    fluid = lab == LABELS["effusion"]
    sides = set()
    if fluid.any():
        x = _plane_world(affine, axis, index, fluid)[:, 0]
        sides = {
            name
            for name, n in (("right", (x > 0).sum()), ("left", (x <= 0).sum()))
            if n >= config.min_effusion_px
        }
    effusion = "bilateral" if len(sides) == 2 else (sides.pop() if sides else None)

    lung = np.isin(lab, LUNG_VALUES)
    laa = float((hu[lung] < LAA_HU).mean() * 100) if lung.sum() >= 50 else 0.0
    emphysema = (
        findings.emphysema.grade if findings.emphysema and laa >= config.emphysema_laa_percent else None
    )

    centre = np.zeros(3)
    centre[axis] = index
    position = float((affine @ np.append(centre, 1.0))[axis])  # world mm of the slice plane
    out = {
        "view": view,
        "index": int(index),
        "position_mm": round(position, 2),
        "lesions": lesions,
        "effusion": effusion,
        "emphysema": emphysema,
        "laa950_percent": round(laa, 2),
        "normal": not lesions and effusion is None and emphysema is None,
        "subject": subject,
    }
    out["z_mm" if view == "axial" else "y_mm"] = out["position_mm"]
    transform = transform or slice_transform(config.window, config.size)
    hu_display = _display(hu)
    row_mm, col_mm = in_plane[1], in_plane[0]  # display rows follow the second raw axis, columns the first
    return SliceSample(
        image=np.asarray(transform(hu_display), np.float32),
        hu=hu_display,
        label2d=_display(lab),
        caption_en=caption_en(out),
        caption_zh=caption_zh(out),
        findings=out,
        spacing_mm=(float(row_mm), float(col_mm)),
    )
