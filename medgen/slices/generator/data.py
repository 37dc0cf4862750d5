"""Training pairs for the slice preview: a phantom slice, the layout slice under it, captions and the
micro-conditioning values (SDXL-style: where the slice is and how it was framed).

A pair comes from one phantom subject built with `make_phantom_with_tissues`; its layout is
`medgen.layout.layout_of_case` of the same build, so a training layout is exactly what `make_layout` gives
at generation time for those findings, anatomy and seed. Subjects vary the in-plane pixel size
(`FOV_FACTORS`), so the field of view the model is told about is a real variable.

Pairs are stored compactly (image float16 in [-1, 1], layout labels uint8, density float16) and turned into
network inputs per batch by `batch_inputs`, which also applies the SDXL crop augmentation (a random crop
resized back to full size, its offset recorded as micro-conditioning).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medgen.layout import layout_channels, layout_of_case
from medgen.slices.data import SliceConfig, _display
from medgen.slices.sources import subject_slices

FOV_FACTORS = (0.9, 1.0, 1.1)  # training fields of view relative to `fov_mm` (288 / 320 / 352 mm by default)
UNKNOWN_DENSITY = -1.0  # micro-conditioning value of "density not given"
MICRO = ("position_mm", "fov_mm", "spacing_mm", "crop_top", "crop_left", "density")
MICRO_SCALE = np.array([1.0, 1.0, 100.0, 1.0, 1.0, 1000.0], np.float32)  # spread small values over the sinusoids


@dataclass
class PreviewPairs:
    """N stored pairs on a `size` x `size` grid (display orientation, see `medgen.slices.data`).

    Args:
        image: (N, size, size) float16 CT slice, HU window -> [-1, 1].
        labels: (N, size, size) uint8 layout labels (`medgen.layout.labels` values).
        density: (N, size, size) float16 target density d inside lesions, 0 elsewhere.
        micro: (N, 6) float32 raw micro-conditioning (`MICRO`; crop offsets 0; density of the slice's largest
            lesion or `UNKNOWN_DENSITY`).
        captions_en, captions_zh: what each slice shows; findings: per-slice findings dicts.
    """

    image: np.ndarray
    labels: np.ndarray
    density: np.ndarray
    micro: np.ndarray
    captions_en: list[str]
    captions_zh: list[str]
    findings: list[dict]

    def __len__(self) -> int:
        return len(self.image)

    def save(self, path) -> None:
        """Write the pairs as one ``.npz`` (a training data cache, not a model component), atomically."""
        from pathlib import Path

        from medgen.io.atomic import atomic_path

        path = Path(path)
        if path.suffix != ".npz":  # numpy's own rule for a name without the suffix
            path = path.with_name(path.name + ".npz")
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.savez_compressed(handle, image=self.image, labels=self.labels, density=self.density,
                                micro=self.micro, captions_en=np.array(self.captions_en),
                                captions_zh=np.array(self.captions_zh),
                                findings=np.array([repr(f) for f in self.findings]))

    @classmethod
    def load(cls, path) -> PreviewPairs:
        import ast

        z = np.load(path)
        return cls(z["image"], z["labels"], z["density"], z["micro"], z["captions_en"].tolist(),
                   z["captions_zh"].tolist(), [ast.literal_eval(f) for f in z["findings"]])


def slice_micro(findings: dict, fov_mm: float, spacing_mm: float) -> np.ndarray:
    """Raw micro-conditioning of an uncropped slice (`MICRO` order)."""
    lesions = findings.get("lesions") or []
    density = float(lesions[0]["density"]) if lesions else UNKNOWN_DENSITY
    return np.array([findings["position_mm"], fov_mm, spacing_mm, 0.0, 0.0, density], np.float32)


def layout_slice(labels3d: np.ndarray, density3d: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Axial slice `index` of a layout, in display orientation (labels uint8, density float32)."""
    return _display(labels3d[:, :, index]).astype(np.uint8), _display(density3d[:, :, index]).astype(np.float32)


def subject_pairs(seed: int, *, extra: int = 3, size: int = 128, fov_mm: float = 320.0) -> list[tuple]:
    """(image, labels, density, micro, caption_en, caption_zh, findings) of the key slice and `extra` random
    lung-level axial slices of the phantom of `seed` (its findings drawn from the seed), on a `size` px grid
    whose field of view is `fov_mm` times one of `FOV_FACTORS` (drawn from the seed)."""
    from medgen.phantom.chest import make_phantom_with_tissues

    rng = np.random.default_rng([int(seed), 7])
    spacing = float(rng.choice(FOV_FACTORS)) * float(fov_mm) / size
    config = SliceConfig(shape=(size, size, 64), spacing=(spacing, spacing, 5.0), size=size)
    case, tissue = make_phantom_with_tissues(None, shape=config.shape, spacing=config.spacing, seed=int(seed))
    layout = layout_of_case(case, tissue, seed=int(seed))
    labels3d, density3d = np.asarray(layout.labels.array), np.asarray(layout.density.array)
    samples = subject_slices(case.image, case.labels, case.findings, case.lesion_ids, extra=extra, rng=rng,
                             config=config, subject=int(seed))
    out = []
    for sample in samples:
        labels, density = layout_slice(labels3d, density3d, sample.findings["index"])
        out.append((sample.image[0], labels, density, slice_micro(sample.findings, size * spacing, spacing),
                    sample.caption_en, sample.caption_zh, sample.findings))
    return out


def build_pairs(n_subjects: int, *, seed0: int, extra: int = 3, size: int = 128, fov_mm: float = 320.0,
                progress: bool = True) -> PreviewPairs:
    """Pairs of the phantoms of seeds ``seed0 .. seed0 + n_subjects - 1``."""
    if n_subjects < 1:
        raise ValueError(f"`n_subjects` must be >= 1, got {n_subjects}")
    rows = []
    for seed in tqdm(range(seed0, seed0 + n_subjects), desc="preview pairs", unit="subject", disable=not progress):
        rows += subject_pairs(seed, extra=extra, size=size, fov_mm=fov_mm)
    image, labels, density, micro, en, zh, findings = zip(*rows, strict=True)
    return PreviewPairs(np.stack(image).astype(np.float16), np.stack(labels), np.stack(density).astype(np.float16),
                        np.stack(micro), list(en), list(zh), list(findings))


def scaled_micro(micro) -> torch.Tensor:
    """Raw micro-conditioning (B, 6) -> the values the UNet's sinusoidal embedding reads."""
    micro = torch.as_tensor(np.asarray(micro, np.float32))
    return micro * torch.from_numpy(MICRO_SCALE)


def layout_tensor(labels: np.ndarray, density: np.ndarray) -> torch.Tensor:
    """(B, C, H, W) layout channels (`medgen.layout.labels.CHANNELS`) of (B, H, W) label and density slices."""
    return torch.from_numpy(np.stack([layout_channels(lab, den.astype(np.float32))
                                      for lab, den in zip(labels, density, strict=True)]))


def batch_inputs(pairs: PreviewPairs, index, *, crop_p: float = 0.5, min_crop: float = 0.8,
                 rng: np.random.Generator | None = None) -> dict:
    """Network inputs of the pairs at `index`: image (B, 1, S, S), layout (B, C, S, S), raw micro (B, 6),
    captions; with probability `crop_p` a pair is cropped (side >= `min_crop` of the slice) and resized back,
    image and layout alike, and the crop's top/left offset in pixels goes into its micro-conditioning."""
    rng = rng if rng is not None else np.random.default_rng()
    index = np.asarray(index)
    image = torch.from_numpy(pairs.image[index].astype(np.float32))[:, None]
    layout = layout_tensor(pairs.labels[index], pairs.density[index])
    micro = pairs.micro[index].copy()
    size = image.shape[-1]
    for b in range(len(index)):
        if rng.random() >= crop_p:
            continue
        side = int(rng.integers(int(min_crop * size), size))
        top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        window = (slice(None), slice(top, top + side), slice(left, left + side))
        image[b] = F.interpolate(image[b][window][None], size=(size, size), mode="bilinear", align_corners=False)[0]
        layout[b] = F.interpolate(layout[b][window][None], size=(size, size), mode="bilinear",
                                  align_corners=False)[0]
        micro[b, 3:5] = (top, left)
    return {"image": image, "layout": layout, "micro": micro, "index": index}
