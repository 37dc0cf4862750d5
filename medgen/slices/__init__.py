"""2D slice submodule: captioned CT slices (`data`, `sources`, `captions`, `export`) and a CLIP-style
slice-report model (`clip`)."""

from medgen.slices.data import SliceConfig, SliceSample, extract_slice, key_slice_index, slice_transform
from medgen.slices.sources import EVAL_SEED0, TRAIN_SEED0, manifest_slices, phantom_slice_set, phantom_slices

__all__ = [
    "EVAL_SEED0",
    "TRAIN_SEED0",
    "SliceConfig",
    "SliceSample",
    "extract_slice",
    "key_slice_index",
    "manifest_slices",
    "phantom_slice_set",
    "phantom_slices",
    "slice_transform",
]
