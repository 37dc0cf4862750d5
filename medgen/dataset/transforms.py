"""MONAI dictionary-transform chains from manifest rows to network-ready tensors.

Chain (`build_transforms`)::

    LoadVolumed          NIfTI file or DICOM series folder -> MetaTensor (X, Y, Z) + RAS affine
    EnsureChannelFirstd  -> (1, X, Y, Z)
    Orientationd("RAS")
    Spacingd             config.spacing; bilinear for the image, nearest for the label map
    ScaleIntensityRanged HU window [-1024, 1024] -> [-1, 1], clipped (== medgen.volume.hu_to_intensity)
    ResizeWithPadOrCropd config.shape; the image pads with air (-1), the label map with background (0)
    DensityToFloatd      density None -> NaN ("unknown")
    EnsureTyped          image float32, label uint8, affine kept (MetaTensor)
    DropTraceD           forget the traced operations (keeps the disk cache loadable)

`report`, `findings`, `id`, `language`, ... pass through untouched.

There are deliberately **no left/right flips** (and no other mirroring): the report says "left lower
lobe", and a mirrored volume would teach the model that the words and the side are unrelated.
Augmentations that keep laterality (small intensity jitter, crops) are the caller's to add.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, MetaTensor, PersistentDataset
from monai.data.utils import collate_meta_tensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
)

from medgen.io import load_volume
from medgen.volume import HU_WINDOW

CACHE_MODES = ("none", "memory", "disk")


def _triple(value, name: str, kind):
    values = tuple(kind(v) for v in np.broadcast_to(np.asarray(value), (3,)))
    if any(v <= 0 for v in values):
        raise ValueError(f"`{name}` must be positive, got {value}")
    return values


@dataclass
class DataConfig:
    """How manifest rows become tensors.

    Args:
        shape: output grid (X, Y, Z) in voxels (an int means a cube).
        spacing: output voxel size (mm) (a float means isotropic).
        hu_window: HU mapped to [-1, 1] (clipped); keep the package default unless you retrain.
        with_label: also load, resample and crop the `label` map (nearest neighbour).
        label_key: the manifest column holding that map: "label" (the phantom's label map) or "layout"
            (the layout label map written by `medgen data layouts`: each lesion its own label, emphysema).
        cache: "none", "memory" (CacheDataset) or "disk" (PersistentDataset under `cache_dir`).
        cache_dir: folder for the disk cache (required for cache="disk").
        num_workers: worker processes used to fill the memory cache / by DataLoaders.
    """

    shape: tuple[int, int, int] = (64, 64, 64)
    spacing: tuple[float, float, float] = (5.0, 5.0, 5.0)
    hu_window: tuple[float, float] = HU_WINDOW
    with_label: bool = False
    label_key: str = "label"
    cache: str = "none"
    cache_dir: str | None = None
    num_workers: int = 0

    def __post_init__(self):
        self.shape = _triple(self.shape, "shape", int)
        self.spacing = _triple(self.spacing, "spacing", float)
        lo, hi = (float(v) for v in self.hu_window)
        if not lo < hi:
            raise ValueError(f"`hu_window` must be (low, high) with low < high, got {self.hu_window}")
        self.hu_window = (lo, hi)
        if self.cache not in CACHE_MODES:
            raise ValueError(f"`cache` must be one of {CACHE_MODES}, got {self.cache!r}")
        if self.cache == "disk" and not self.cache_dir:
            raise ValueError("`cache_dir` is required when cache='disk'")
        if int(self.num_workers) < 0:
            raise ValueError(f"`num_workers` must be >= 0, got {self.num_workers}")
        self.num_workers = int(self.num_workers)

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        """From a config's ``data:`` section; its ``manifest`` and ``phantom_version`` entries (where rows come from)
        are ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"manifest", "phantom_version"})
        if unknown:
            raise ValueError(f"unknown data config key(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def fingerprint(self) -> str:
        """Short hash of everything that changes the cached tensors (names the disk-cache subfolder)."""
        keys = ("shape", "spacing", "hu_window", "with_label") + (("label_key",) if self.label_key != "label" else ())
        payload = {k: v for k, v in asdict(self).items() if k in keys}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


class LoadVolumed(MapTransform):
    """Load NIfTI files or DICOM series folders with `medgen.io.load_volume` into RAS MetaTensors.

    MONAI's own `PydicomReader` orders a series by InstanceNumber; `medgen.io` sorts slices by their
    position along the slice normal and converts DICOM's LPS to RAS, so both formats arrive alike.

    Args:
        keys: entries holding a path; each becomes a MetaTensor (X, Y, Z) whose ``affine`` is RAS+ mm.
        dtype: numpy dtype of the loaded voxels, one per key or one for all.
    """

    def __init__(self, keys, dtype=np.float32, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.dtypes = dtype if isinstance(dtype, (list, tuple)) else [dtype] * len(self.keys)

    def __call__(self, data):
        d = dict(data)
        for key, dtype in self.key_iterator(d, self.dtypes):
            volume = load_volume(d[key])
            affine = torch.as_tensor(volume.affine, dtype=torch.float64)
            meta = {
                "original_affine": affine.clone(),
                "spatial_shape": torch.as_tensor(volume.shape),
                "space": "RAS",
                "original_channel_dim": "no_channel",
                "filename_or_obj": str(d[key]),
            }
            d[key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume.array, dtype=dtype)),
                                affine=affine, meta=meta)
        return d


class DensityToFloatd(MapTransform):
    """`density` None (unknown) -> NaN, else float, so densities batch into one tensor."""

    def __init__(self, keys=("density",), allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = math.nan if d[key] is None else float(d[key])
        return d


class DropTraceD(MapTransform):
    """Forget the traced operations (numpy-laden `applied_operations`) and keep only voxels + affine.

    Nothing here is inverted (outputs are mapped back through the affine and `intensity_to_hu`), and
    the trace's numpy arrays would make `PersistentDataset`'s safe ``torch.load`` reject every cache
    file and silently recompute it.
    """

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], MetaTensor):
                d[key].applied_operations = []
        return d


def build_transforms(config: DataConfig) -> Compose:
    """Deterministic chain: manifest row -> {"image": MetaTensor (1, X, Y, Z) in [-1, 1], ...}.

    With ``config.with_label`` the ``label`` map is carried alongside (uint8, same grid and affine).
    """
    keys = ["image", "label"] if config.with_label else ["image"]
    lo, hi = config.hu_window
    chain = [
        LoadVolumed(keys, dtype=[np.float32, np.uint8][: len(keys)]),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys, pixdim=config.spacing, mode=["bilinear", "nearest"][: len(keys)],
                 padding_mode=["border", "zeros"][: len(keys)], dtype=np.float32),
        ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True),
        ResizeWithPadOrCropd("image", spatial_size=config.shape, mode="constant", value=-1.0),
    ]
    if config.with_label:
        chain.append(ResizeWithPadOrCropd("label", spatial_size=config.shape, mode="constant", value=0))
    chain += [
        DensityToFloatd(),
        EnsureTyped(keys, dtype=[torch.float32, torch.uint8][: len(keys)], track_meta=True),
        DropTraceD(keys),
    ]
    return Compose(chain)


def build_dataset(entries: list[dict], config: DataConfig) -> torch.utils.data.Dataset:
    """A MONAI dataset over manifest rows (see `read_manifest`), cached as ``config.cache`` says.

    The disk cache keeps MetaTensors (affine included) under ``cache_dir/<config fingerprint>/``.
    """
    transform = build_transforms(config)
    if config.with_label and config.label_key != "label":
        missing = [e.get("id") for e in entries if not e.get(config.label_key)]
        if missing:
            raise ValueError(f"manifest rows without {config.label_key!r} (e.g. {missing[0]!r}); "
                             "run `medgen data layouts --manifest ...` first")
        entries = [{**e, "label": e[config.label_key]} for e in entries]
    if config.cache == "memory":
        return CacheDataset(entries, transform, num_workers=config.num_workers or None, progress=False)
    if config.cache == "disk":
        cache_dir = Path(config.cache_dir) / config.fingerprint()
        return PersistentDataset(entries, transform, cache_dir=cache_dir, track_meta=True)
    return Dataset(entries, transform)


def collate_reports(batch) -> dict:
    """Collate dataset items for training.

    Returns:
        ``image`` MetaTensor (B, 1, X, Y, Z) in [-1, 1] with a (B, 4, 4) affine; ``label`` (B, 1, X, Y, Z)
        when loaded; ``density`` float tensor (B,) with NaN for unknown; ``report``, ``findings``, ``id``
        and every other entry as lists.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if isinstance(values[0], torch.Tensor):
            out[key] = collate_meta_tensor(values)
        elif key == "density":
            out[key] = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)
        else:
            out[key] = values
    return out
