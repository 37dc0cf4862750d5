"""The layout's label table and the conditioning channels the renderer reads.

Label values keep the phantom's (`medgen.findings.LABELS`) for anatomy; emphysematous lung gets its own
value and every lesion its own value from `FIRST_LESION_LABEL` on (lesion i of `findings.lesions` ->
``FIRST_LESION_LABEL + i``), so a label map says which voxels are which reported lesion.
"""

from __future__ import annotations

import numpy as np

from medgen.findings import EMPHYSEMA_LABEL, FIRST_LESION_LABEL, LABELS, LOBES, MAX_LESIONS

LAYOUT_LABELS = {**{k: v for k, v in LABELS.items() if k != "lesion"}, "emphysema": EMPHYSEMA_LABEL}
# Semantic channels of the conditioning tensor, then the density channel (target d inside lesions, 0 elsewhere).
CHANNELS = ("body", "bone", "lung", "airway", "mediastinum", "lesion", "effusion", "emphysema", "density")
N_CHANNELS = len(CHANNELS)


def label_table(n_lesions: int) -> dict[str, int]:
    """Name -> value for a layout with `n_lesions` lesions (written into the sidecar)."""
    if not 0 <= n_lesions <= MAX_LESIONS:
        raise ValueError(f"a layout holds 0 to {MAX_LESIONS} lesions, got {n_lesions}")
    return {**LAYOUT_LABELS, **{f"lesion_{i + 1}": FIRST_LESION_LABEL + i for i in range(n_lesions)}}


def known_values(n_lesions: int = MAX_LESIONS) -> set[int]:
    return set(label_table(n_lesions).values())


def layout_channels(labels: np.ndarray, density: np.ndarray) -> np.ndarray:
    """(len(CHANNELS), X, Y, Z) float32 conditioning tensor from a layout label map and density map."""
    lobes = [LABELS[lobe] for lobe in LOBES]
    masks = {
        "body": labels == LABELS["body"], "bone": labels == LABELS["bone"],
        "lung": np.isin(labels, [*lobes, EMPHYSEMA_LABEL]), "airway": labels == LABELS["airway"],
        "mediastinum": labels == LABELS["mediastinum"], "lesion": labels >= FIRST_LESION_LABEL,
        "effusion": labels == LABELS["effusion"], "emphysema": labels == EMPHYSEMA_LABEL,
    }
    out = np.zeros((N_CHANNELS, *labels.shape), dtype=np.float32)
    for i, name in enumerate(CHANNELS[:-1]):
        out[i] = masks[name]
    out[-1] = np.where(masks["lesion"], density, 0.0)
    return out


def lesion_ids(labels: np.ndarray) -> np.ndarray:
    """uint8 instance map of a layout label map: n for lesion n (label ``FIRST_LESION_LABEL + n - 1``), 0 elsewhere."""
    labels = np.asarray(labels).astype(np.int32)
    return np.where(labels >= FIRST_LESION_LABEL, labels - FIRST_LESION_LABEL + 1, 0).astype(np.uint8)


def density_map(labels: np.ndarray, densities) -> np.ndarray:
    """Lesion density map of a layout label map: ``densities[i]`` inside lesion i, 0 elsewhere."""
    out = np.zeros(labels.shape, np.float32)
    for i, d in enumerate(densities):
        out[labels == FIRST_LESION_LABEL + i] = float(d)
    return out


def batch_channels(labels, findings: list[dict]):
    """Conditioning tensor (B, C, X, Y, Z) float32 for a batch of layout label maps (B, 1, X, Y, Z) and the
    findings dicts of the rows (lesion densities, in the order of the lesion labels)."""
    import torch

    labels_np = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)[:, 0]
    out = [layout_channels(lab, density_map(lab, [les["density"] for les in (f or {}).get("lesions", [])]))
           for lab, f in zip(labels_np.astype(np.uint8), findings, strict=True)]
    return torch.from_numpy(np.stack(out))


def finding_mask(layout):
    """(B, 1, *S) torch tensor: 1 inside lesions and pleural fluid, 0 elsewhere, from layout channels (B, C, *S)
    (2D or 3D): the voxels a loss weights up so that the findings are not drowned by the background."""
    return (layout[:, CHANNELS.index("lesion")] + layout[:, CHANNELS.index("effusion")]).clamp(0, 1).unsqueeze(1)


def pool_layout(layout, factor: int):
    """Layout channels (B, L, X, Y, Z) torch tensor averaged over factor^3 blocks: the fraction of each class
    per latent voxel (and the mean lesion density), the UNet's view of the layout."""
    import torch

    return torch.nn.functional.avg_pool3d(layout.float(), kernel_size=factor, stride=factor)
