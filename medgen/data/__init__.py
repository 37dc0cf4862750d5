"""medgen.data: findings, phantoms, reports, the manifest, MONAI transforms and the dataset builder.

Importing this package is light (numpy only); the MONAI/torch pieces (`DataConfig`, `build_transforms`,
`build_dataset`, `collate_reports`) load on first use.
"""

from __future__ import annotations

import importlib

from medgen.data.findings import Effusion, Emphysema, Findings, Lesion
from medgen.data.manifest import REQUIRED_KEYS, read_manifest, write_manifest

_LAZY = {
    "DataConfig": "medgen.data.transforms",
    "build_transforms": "medgen.data.transforms",
    "build_dataset": "medgen.data.transforms",
    "collate_reports": "medgen.data.transforms",
    "build_synthetic_dataset": "medgen.data.builder",
    "make_phantom": "medgen.data.phantom",
    "sample_findings": "medgen.data.phantom",
    "write_report": "medgen.data.reports",
}

__all__ = ["Effusion", "Emphysema", "Findings", "Lesion", "REQUIRED_KEYS", "read_manifest", "write_manifest",
           *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgen.data' has no attribute {name!r}")
