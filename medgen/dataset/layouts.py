"""Write the layout label map of every subject of a phantom dataset (``layouts/<id>.nii.gz``) and add a
``layout`` column to its manifest, so the renderer can be trained on (layout, CT) pairs.

The layout of a phantom subject is exact: `make_layout` re-runs the subject's placement from its phantom
seed and findings, so the lesions, effusion and emphysema of the layout are those of the image voxel for
voxel (checked against the dataset's own label map).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medgen.errors import InputFileError
from medgen.findings import LABELS, Findings
from medgen.layout.labels import EMPHYSEMA_LABEL, FIRST_LESION_LABEL

LAYOUT_DESCRIP = "SYNTHETIC medgen layout label map (values: sidecar label_table)"


def _one(args) -> tuple[str, str]:
    row, root, shape, spacing = args
    from medgen.io import save_nifti
    from medgen.layout.layout import make_layout

    if row.get("seed") is None:
        raise InputFileError(root / "manifest.jsonl", f"row {row['id']!r} has no phantom seed: layouts are made "
                                                      "for phantom datasets (`medgen data synth`)")
    anatomy = {"phantom_version": 2, "seed": int(row["seed"])} if row.get("phantom_version") == 2 else None
    layout = make_layout(Findings.from_dict(row["findings"]), shape=shape, spacing=spacing, seed=int(row["seed"]),
                         anatomy=anatomy)
    if row.get("label"):
        _check_against_label(layout.labels.array, row["label"], row["id"])
    rel = f"layouts/{row['id']}.nii.gz"
    save_nifti(layout.labels, root / rel, dtype=np.uint8, descrip=LAYOUT_DESCRIP,
               sidecar={"synthetic": True, **layout.to_dict()})
    return row["id"], rel


def _check_against_label(layout: np.ndarray, label_path: str, row_id: str) -> None:
    import nibabel as nib

    label = np.asarray(nib.load(label_path).dataobj)
    if label.shape != layout.shape:
        raise InputFileError(label_path, f"{row_id}: label map {label.shape} is not on the layout grid {layout.shape}")
    mapped = np.where(layout >= FIRST_LESION_LABEL, LABELS["lesion"], layout)
    emphysema = mapped == EMPHYSEMA_LABEL
    same = (mapped == label) | emphysema
    if not same.all():
        raise InputFileError(label_path, f"{row_id}: the re-made layout differs from the dataset's label map in "
                                         f"{int((~same).sum())} voxels (built by another medgen version?)")


def add_layouts(manifest, *, shape=64, spacing=5.0, workers: int = 1, progress: bool = True) -> Path:
    """Write every row's layout and rewrite the manifest with a ``layout`` column; returns the manifest path."""
    from medgen.dataset.manifest import read_manifest, write_manifest

    manifest = Path(manifest)
    rows = read_manifest(manifest)
    root = manifest.resolve().parent
    (root / "layouts").mkdir(exist_ok=True)
    jobs = [(row, root, shape, spacing) for row in rows]
    done = {}
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for row_id, rel in tqdm(pool.map(_one, jobs, chunksize=8), total=len(jobs), desc="layouts",
                                    disable=not progress):
                done[row_id] = rel
    else:
        for job in tqdm(jobs, desc="layouts", disable=not progress):
            row_id, rel = _one(job)
            done[row_id] = rel
    for row in rows:
        row["layout"] = str(root / done[row["id"]])
    return write_manifest(manifest, rows)
