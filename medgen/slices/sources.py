"""Where captioned slices come from: phantoms (exact lesion instances) or the subjects of a manifest.

Each subject gives its key slice per view (`medgen.slices.data.key_slice_index`) and, for training variety,
`extra` random lung-level slices. Phantom seeds: `TRAIN_SEED0` onwards for training sets, `EVAL_SEED0`
onwards for held-out evaluation.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import label
from tqdm import tqdm

from medgen.findings import LABELS, Findings
from medgen.seeds import SEED_RANGES
from medgen.slices.data import (
    SliceConfig,
    SliceSample,
    extract_slice,
    key_slice_index,
    lung_indices,
    slice_transform,
)
from medgen.volume import Volume

TRAIN_SEED0 = SEED_RANGES["slices.train"].start  # phantom seeds for slice training sets
EVAL_SEED0 = SEED_RANGES["slices.eval"].start  # held-out phantom seeds for slice evaluation (medgen.seeds)


def subject_slices(
    image: Volume,
    labels: Volume,
    findings: Findings,
    lesion_ids: np.ndarray,
    *,
    views=("axial",),
    extra: int = 0,
    rng: np.random.Generator | None = None,
    config: SliceConfig | None = None,
    subject=None,
) -> list[SliceSample]:
    """The key slice of each view, plus `extra` random lung-level slices per view (for training variety)."""
    config = config or SliceConfig()
    if extra < 0:
        raise ValueError(f"`extra` must be >= 0, got {extra}")
    rng = rng if rng is not None else np.random.default_rng(0)
    transform = slice_transform(config.window, config.size)
    lab3 = np.asarray(labels.array)
    out = []
    for view in views:
        key = key_slice_index(lab3, lesion_ids, view)
        others = np.setdiff1d(lung_indices(lab3, view), [key])
        chosen = [key, *rng.choice(others, size=min(extra, len(others)), replace=False).tolist()]
        out += [
            extract_slice(
                image,
                labels,
                findings,
                lesion_ids,
                view=view,
                index=int(i),
                config=config,
                subject=subject,
                transform=transform,
            )
            for i in chosen
        ]
    return out


def phantom_slices(
    seed: int,
    *,
    views=("axial",),
    extra: int = 0,
    config: SliceConfig | None = None,
    findings: Findings | None = None,
) -> list[SliceSample]:
    """Captioned slices of the phantom of `seed` (its findings drawn from the seed unless given)."""
    from medgen.phantom.chest import make_phantom

    config = config or SliceConfig()
    case = make_phantom(findings, shape=tuple(config.shape), spacing=tuple(config.spacing), seed=int(seed))
    return subject_slices(
        case.image,
        case.labels,
        case.findings,
        case.lesion_ids,
        views=views,
        extra=extra,
        rng=np.random.default_rng([int(seed), 1]),
        config=config,
        subject=int(seed),
    )


def phantom_slice_set(
    n: int,
    *,
    seed0: int = TRAIN_SEED0,
    views=("axial",),
    extra: int = 0,
    config: SliceConfig | None = None,
    progress: bool = True,
) -> list[SliceSample]:
    """Slices of the phantoms of seeds ``seed0 .. seed0 + n - 1`` (key slice per view, plus `extra`)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be a positive number of subjects, got {n!r}")
    if seed0 < 0:
        raise ValueError(f"`seed0` must be >= 0, got {seed0}")
    out = []
    for seed in tqdm(range(seed0, seed0 + n), desc="phantom slices", unit="subject", disable=not progress):
        out += phantom_slices(seed, views=views, extra=extra, config=config)
    return out


def lesion_instances(labels: np.ndarray, findings: Findings, affine: np.ndarray) -> np.ndarray:
    """Instance map of a label map's lesion voxels: each connected lesion component goes to the finding
    whose ``center_mm`` is nearest its centroid (phantom manifests record the centres)."""
    ids = np.zeros(labels.shape, np.uint8)
    components, count = label(labels == LABELS["lesion"])
    if not count:
        return ids
    centres = [lesion.center_mm for lesion in findings.lesions]
    if not centres or any(c is None for c in centres):
        raise ValueError(
            "the label map has lesion voxels but the findings give no lesion `center_mm` to tell "
            "the lesions apart (manifests written by `medgen data synth` record them)"
        )
    centres = np.asarray(centres, float)
    for n in range(1, count + 1):
        voxels = np.argwhere(components == n)
        world = voxels.mean(axis=0) @ affine[:3, :3].T + affine[:3, 3]
        nearest = int(np.argmin(np.linalg.norm(centres - world, axis=1)))
        ids[tuple(voxels.T)] = nearest + 1
    return ids


def manifest_slices(
    path,
    *,
    views=("axial",),
    extra: int = 0,
    limit: int | None = None,
    config: SliceConfig | None = None,
    progress: bool = True,
) -> list[SliceSample]:
    """Captioned slices of the subjects of a manifest that have a label map (the first `limit` of them)."""
    from medgen.dataset.manifest import read_manifest
    from medgen.errors import InputFileError
    from medgen.io import load_volume

    rows = [row for row in read_manifest(path) if row.get("label")]
    if not rows:
        raise InputFileError(path, "no row with a `label` map: slices need the label map for their captions")
    out = []
    for number, row in enumerate(
        tqdm(rows[:limit], desc="manifest slices", unit="subject", disable=not progress)
    ):
        image = load_volume(row["image"])
        labels = load_volume(row["label"])
        if labels.shape != image.shape or not np.allclose(labels.affine, image.affine, atol=1e-3):
            raise InputFileError(row["label"], f"label map grid {labels} differs from the image grid {image}")
        lab = np.rint(np.asarray(labels.array)).astype(np.uint8)
        findings = Findings.from_dict(row.get("findings") or {})
        ids = lesion_instances(lab, findings, image.affine)
        out += subject_slices(
            image,
            labels.with_array(lab),
            findings,
            ids,
            views=views,
            extra=extra,
            rng=np.random.default_rng([number, 1]),
            config=config,
            subject=row["id"],
        )
    return out
