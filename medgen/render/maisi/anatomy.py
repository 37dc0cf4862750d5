"""The anatomy MAISI renders, as a MAISI-id label map on the output grid: a mask from the download's candidate
database, or the user's segmentation.

Candidate choice follows NVIDIA's ``find_masks`` + ``find_closest_masks``: keep masks that hold every
required label (the five lobes), whose body regions include the chest, and that hold no tumour label (medgen
places its own); prefer masks of exactly the output shape and spacing, else the closest by field of view,
shape and spacing (none smaller than the output by 128 voxels or more on an axis); the seed picks among them.
The mask is resampled (nearest) onto the output grid about its own centre and padded/cropped to the shape.

A user segmentation (``--anatomy``) holds MAISI ids or TotalSegmentator v2 "total" ids; without a body label
(200) one is synthesised: per axial slice, the convex hull of every labelled voxel, grown by `BODY_MARGIN_MM`
(the subcutaneous tissue and skin no organ label covers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt, map_coordinates

from medgen.errors import InputFileError, MedgenError
from medgen.maisi_labels import BODY_ID, LOBE_IDS, MAISI_LABELS
from medgen.volume import Volume

REQUIRED_IDS = tuple(sorted(LOBE_IDS.values()))
TUMOR_IDS = (23, 24, 26, 27, 128)  # lung, pancreatic, hepatic tumour, colon cancer primaries, bone lesion
CHEST_REGION = 1
BODY_MARGIN_MM = 15.0
# TotalSegmentator v2 "total" task class names, ids 1..117 in order.
TOTALSEG_V2 = (
    "spleen kidney_right kidney_left gallbladder liver stomach pancreas adrenal_gland_right adrenal_gland_left "
    "lung_upper_lobe_left lung_lower_lobe_left lung_upper_lobe_right lung_middle_lobe_right lung_lower_lobe_right "
    "esophagus trachea thyroid_gland small_bowel duodenum colon urinary_bladder prostate kidney_cyst_left "
    "kidney_cyst_right sacrum vertebrae_S1 " + " ".join(f"vertebrae_L{i}" for i in range(5, 0, -1)) + " "
    + " ".join(f"vertebrae_T{i}" for i in range(12, 0, -1)) + " " + " ".join(f"vertebrae_C{i}" for i in range(7, 0, -1))
    + " heart aorta pulmonary_vein brachiocephalic_trunk subclavian_artery_right subclavian_artery_left "
    "common_carotid_artery_right common_carotid_artery_left brachiocephalic_vein_left brachiocephalic_vein_right "
    "atrial_appendage_left superior_vena_cava inferior_vena_cava portal_vein_and_splenic_vein iliac_artery_left "
    "iliac_artery_right iliac_vena_left iliac_vena_right humerus_left humerus_right scapula_left scapula_right "
    "clavicula_left clavicula_right femur_left femur_right hip_left hip_right spinal_cord gluteus_maximus_left "
    "gluteus_maximus_right gluteus_medius_left gluteus_medius_right gluteus_minimus_left gluteus_minimus_right "
    "autochthon_left autochthon_right iliopsoas_left iliopsoas_right brain skull "
    + " ".join(f"rib_{s}_{i}" for s in ("left", "right") for i in range(1, 13)) + " sternum costal_cartilages"
).split()


class AnatomyError(MedgenError, ValueError):
    """No usable anatomy: no candidate mask fits, or a segmentation without the lobes medgen needs."""


def totalseg_name_to_maisi(name: str) -> str:
    """MAISI label name of a TotalSegmentator class name (``rib_left_3`` -> ``left rib 3``)."""
    if name == "urinary_bladder":
        return "bladder"
    words = name.split("_")
    if words[0] == "rib":
        return f"{words[1]} rib {words[2]}"
    if words[-1] in ("left", "right"):
        words = [words[-1], *words[:-1]]
    return " ".join(words)


TOTALSEG_TO_MAISI = {i + 1: MAISI_LABELS[totalseg_name_to_maisi(n)] for i, n in enumerate(TOTALSEG_V2)}


def read_candidates(path: Path) -> list[dict]:
    """The candidate mask database (a JSON list of entries with ``pseudo_label_filename``, ``label_list``,
    ``dim``, ``spacing`` and optionally ``top_region_index`` / ``bottom_region_index``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(path, f"not a readable candidate mask database ({str(err).splitlines()[0]})") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) and "pseudo_label_filename" in e for e in data):
        raise InputFileError(path, "a candidate mask database is a JSON list of mask entries")
    return data


def _covers_chest(entry: dict) -> bool:
    if "top_region_index" not in entry:
        return True
    top = int(np.argmax(entry["top_region_index"]))
    bottom = int(np.argmax(entry["bottom_region_index"]))
    return top <= CHEST_REGION <= bottom


def rank_candidates(entries: list[dict], shape, spacing) -> list[tuple[dict, float]]:
    """Usable entries with their distance to the output grid (0 = exact shape and spacing), nearest first."""
    out = []
    for entry in entries:
        labels = set(int(v) for v in entry.get("label_list", []))
        if not set(REQUIRED_IDS) <= labels or labels & set(TUMOR_IDS) or not _covers_chest(entry):
            continue
        dim, sp = entry["dim"], entry["spacing"]
        if all(int(dim[a]) == shape[a] and abs(float(sp[a]) - spacing[a]) < 1e-6 for a in range(3)):
            out.append((entry, 0.0))
            continue
        if any(abs(int(dim[a])) <= shape[a] - 128 for a in range(3)):
            continue  # NVIDIA's rule: a mask is not upsampled that much
        diff = sum(abs(abs(dim[a] * sp[a]) - shape[a] * spacing[a]) / 10 + abs(abs(dim[a]) - shape[a]) / 100
                   + abs(abs(sp[a]) - spacing[a]) for a in range(3))
        out.append((entry, float(diff)))
    return sorted(out, key=lambda item: item[1])


def choose_candidate(entries: list[dict], shape, spacing, seed: int, top: int = 5) -> dict:
    """The seed's pick among the exact matches, or among the `top` nearest when none matches exactly."""
    ranked = rank_candidates(entries, shape, spacing)
    if not ranked:
        raise AnatomyError(f"no candidate mask holds all five lung lobes without a tumour label at "
                           f"{tuple(shape)} voxels / {tuple(spacing)} mm (or near enough to resample)")
    exact = [e for e, d in ranked if d == 0.0]
    pool = exact or [e for e, _ in ranked[:top]]
    return pool[int(np.random.default_rng(int(seed)).integers(len(pool)))]


def resample_labels(volume: Volume, shape, spacing) -> np.ndarray:
    """uint8 labels of `volume` (RAS+, axis-aligned) sampled (nearest) on a grid of `shape` x `spacing` mm
    centred on the volume's own centre (NVIDIA's Spacing + ResizeWithPadOrCrop); 0 outside."""
    array = np.asarray(volume.array)
    src_spacing = np.abs(np.diag(volume.affine)[:3])
    centre = (np.asarray(array.shape, float) - 1) / 2.0
    coords = [centre[d] + (np.arange(shape[d]) - (shape[d] - 1) / 2.0) * spacing[d] / src_spacing[d]
              for d in range(3)]
    same = all(abs(spacing[d] - src_spacing[d]) < 1e-6 and array.shape[d] == shape[d] for d in range(3))
    if same:
        return array.astype(np.uint8)
    out = np.zeros(tuple(shape), np.uint8)
    for k, z in enumerate(coords[2]):  # slice by slice: bounded memory at 512 x 512 x 768
        grid = np.meshgrid(coords[0], coords[1], indexing="ij")
        out[:, :, k] = map_coordinates(array, [grid[0], grid[1], np.full(grid[0].shape, z)], order=0,
                                       mode="constant", cval=0)
    return out


def candidate_anatomy(bundle, shape, spacing, seed: int) -> tuple[np.ndarray, dict]:
    """(uint8 MAISI label map on the output grid, a record of the chosen mask) from the candidate database."""
    from medgen.io import load_nifti

    db, folder = bundle.files["candidates"], bundle.files["masks"]
    if not db.is_file() or not folder.is_dir():
        missing = db if not db.is_file() else folder
        raise AnatomyError(f"the MAISI folder has no candidate mask database ({missing}); unzip the datasets/ "
                           "download there, or pass --anatomy SEG.nii.gz")
    entries = read_candidates(db)
    tried = set()
    for attempt in range(len(entries)):
        remaining = [e for e in entries if e["pseudo_label_filename"] not in tried]
        entry = choose_candidate(remaining, shape, spacing, seed + attempt)
        tried.add(entry["pseudo_label_filename"])
        path = folder / Path(entry["pseudo_label_filename"]).name
        labels = resample_labels(load_nifti(path), shape, spacing)
        if all((labels == i).any() for i in REQUIRED_IDS):  # NVIDIA's check after resampling
            return labels, {"source": "maisi-candidate", "mask": path.name, "dim": list(entry["dim"]),
                            "spacing": list(entry["spacing"]), "seed": int(seed)}
    raise AnatomyError("no candidate mask keeps all five lobes on this output grid")


def user_anatomy(path, shape, spacing, ids: str = "maisi") -> tuple[np.ndarray, dict]:
    """(uint8 MAISI label map on the output grid, record) from a segmentation NIfTI of MAISI or TotalSegmentator
    v2 ids; a body label is synthesised when the file has none.

    Raises:
        InputFileError: unreadable file, ids that are not labels of the named kind, no five lobes."""
    from medgen.io import load_nifti

    volume = load_nifti(path)
    array = np.asarray(volume.array)
    if not np.all(array == np.rint(array)) or array.min() < 0:
        raise InputFileError(path, "a segmentation holds non-negative integer labels")
    values = set(np.unique(array).astype(int).tolist()) - {0}
    table = TOTALSEG_TO_MAISI if ids == "totalseg" else {v: v for v in (*MAISI_LABELS.values(),)}
    unknown = sorted(values - set(table))
    if unknown:
        raise InputFileError(path, f"label value(s) {unknown[:5]} are not {'TotalSegmentator v2' if ids == 'totalseg' else 'MAISI'} ids "
                                   "(pass --anatomy-ids maisi|totalseg to match the file)")
    lut = np.zeros(max(values | {0}) + 1, np.uint8)
    for v in values:
        lut[v] = table[v]
    maisi = Volume(lut[array.astype(np.int64)], volume.affine, {})
    labels = resample_labels(maisi, shape, spacing)
    missing = [name for name, i in LOBE_IDS.items() if not (labels == i).any()]
    if missing:
        raise InputFileError(path, f"the segmentation has no {missing[0].replace('_', ' ')} lobe on the output "
                                   "grid; medgen places lesions in the five lobes")
    synthesised = not (labels == BODY_ID).any()
    if synthesised:
        labels = add_body(labels, spacing)
    return labels, {"source": "user", "path": str(path), "ids": ids, "body_synthesised": synthesised}


def add_body(labels: np.ndarray, spacing, margin_mm: float = BODY_MARGIN_MM) -> np.ndarray:
    """`labels` with every unlabelled voxel of the synthesised body (per-slice convex hull of the labels, grown
    by `margin_mm`) set to the body label (200)."""
    from scipy.spatial import ConvexHull, Delaunay, QhullError

    labels = labels.copy()
    inside = labels > 0
    ii, jj = np.meshgrid(np.arange(labels.shape[0]), np.arange(labels.shape[1]), indexing="ij")
    points_all = np.column_stack([ii.ravel(), jj.ravel()])
    body = np.zeros(labels.shape, bool)
    for k in np.flatnonzero(inside.any(axis=(0, 1))):
        points = np.argwhere(inside[:, :, k])
        hull = inside[:, :, k]
        if len(points) >= 4:
            try:
                tri = Delaunay(points[ConvexHull(points).vertices])
                hull = (tri.find_simplex(points_all) >= 0).reshape(hull.shape) | hull
            except QhullError:  # collinear: no area
                pass
        body[:, :, k] = distance_transform_edt(~hull, sampling=spacing[:2]) <= margin_mm
    labels[body & ~inside] = BODY_ID
    return labels
