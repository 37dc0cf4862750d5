"""medgen.dataset: the manifest (image, labels, report, findings), the dataset builder and the MONAI
transforms training reads it with.

    from medgen.dataset.manifest import read_manifest, write_manifest
    from medgen.dataset.builder import build_synthetic_dataset
"""

from medgen.dataset.manifest import REQUIRED_KEYS, read_manifest, write_manifest

__all__ = ["REQUIRED_KEYS", "read_manifest", "write_manifest"]
