"""Edit an existing CT: add the findings a report describes (or take one out), change nothing else.

1. Read the CT (any grid); resample it onto the model's native grid (its spacing and shape, centred on the
   CT's field of view): the work grid.
2. Anatomy: the CT's own label map (a volume medgen made) or the analyzer's segmentation (lobes by its
   fissure geometry); place the new findings in it (`medgen.edit.place`).
3. Regenerate only a margin around what changed: the CT's latent is kept outside a latent mask and
   re-imposed at every sampler step at that step's noise level (masked denoising), the layout of the edited
   CT conditions the UNet and the anatomy-aware decoder, the report conditions by cross-attention.
4. Blend in image space with a feathered weight w (1 near the change, 0 beyond `margin_mm`): the output is
   ``input + resample(w * (edited - input_on_work_grid))`` on the input's own grid, so wherever w is 0 the
   output is the input, voxel for voxel.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt, map_coordinates

from medgen.diffusion.guidance import Guidance
from medgen.diffusion.sampler import Inpaint, sample_latents
from medgen.edit.anatomy import EditInputError, labels_anatomy, segment_anatomy
from medgen.edit.place import check_edit_numbers, edit_layout
from medgen.findings import LABELS, LOBE_LABELS, Findings
from medgen.layout.labels import (
    EMPHYSEMA_LABEL,
    FIRST_LESION_LABEL,
    label_table,
    layout_channels,
    pool_layout,
)
from medgen.phantom.anatomy import Grid
from medgen.volume import HU_WINDOW, Volume, density_to_hu, hu_to_intensity

DEFAULT_MARGIN_MM = 15.0  # regenerated margin around the change; the feather runs over its outer half
EFFUSION_HU = 10.0  # simple pleural fluid (the phantom draws 6-14 HU)


def source_sha256(path) -> str:
    """sha256 of a file, or of a folder's files (names and bytes, sorted): names the edited CT in the sidecar."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(f.relative_to(path).as_posix().encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def work_grid(pipe, volume: Volume) -> Grid:
    """The model's native grid, centred on the centre of the CT's field of view."""
    shape = np.asarray(volume.shape[:3])
    centre = (np.asarray(volume.affine) @ np.append((shape - 1) / 2.0, 1.0))[:3]
    spacing = np.asarray(pipe.config["spacing"], float)
    native = np.asarray(pipe.config["shape"], int)
    origin = centre - (native - 1) / 2.0 * spacing
    return Grid(tuple(int(s) for s in native), tuple(float(s) for s in spacing), tuple(float(o) for o in origin))


def grid_affine(grid: Grid) -> np.ndarray:
    affine = np.diag([*grid.spacing, 1.0])
    affine[:3, 3] = grid.origin
    return affine


def sample_on(array: np.ndarray, affine: np.ndarray, points_world: np.ndarray, *, order: int, cval: float):
    """`array` (voxel -> world by `affine`) at world points (..., 3): trilinear (order 1) or nearest (0)."""
    index = np.linalg.solve(affine, np.c_[points_world.reshape(-1, 3), np.ones(points_world[..., 0].size)].T)[:3]
    out = map_coordinates(array, index, order=order, mode="constant", cval=cval, prefilter=False)
    return out.reshape(points_world.shape[:-1])


def grid_points(grid: Grid) -> np.ndarray:
    return np.stack(np.meshgrid(*[grid.axis(d) for d in range(3)], indexing="ij"), axis=-1)


def feather(changed: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """Blend weight: 1 within margin/2 of a changed voxel, a smooth ramp to 0 at `margin_mm`, 0 beyond."""
    if not changed.any():
        return np.zeros(changed.shape, np.float32)
    dist = distance_transform_edt(~changed, sampling=spacing)
    ramp = np.clip((margin_mm - dist) / (margin_mm / 2.0), 0.0, 1.0)
    return (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)


def latent_mask(weight: np.ndarray, factor: int) -> torch.Tensor:
    """(1, 1, x, y, z) mask of the latent voxels to regenerate: every block the blend touches, grown by one."""
    touched = torch.from_numpy((weight > 0).astype(np.float32))[None, None]
    pooled = torch.nn.functional.max_pool3d(touched, kernel_size=factor, stride=factor)
    return torch.nn.functional.max_pool3d(pooled, kernel_size=3, stride=1, padding=1)


def calibrate_hu(hu: np.ndarray, original: np.ndarray, edit, spacing, bands: int = 3) -> np.ndarray:
    """HU levels of the regenerated regions set to what the layout and the CT say they are, by one offset per
    region (the rendered texture is kept, only its level moves): each changed lesion's mean to its target
    (``density_to_hu(d)``), new pleural fluid's to `EFFUSION_HU`, and the lung around a changed lesion, in shells
    one voxel thick, to the CT's own lung level in the same voxels (the renderer draws a faint halo there
    that reads as ground glass). The renderer alone misses lesion HU widely (`benchmarks/results/edit/`)."""
    out = hu.copy()
    regions = [(edit.labels == FIRST_LESION_LABEL + i, density_to_hu(lesion.density))
               for i, lesion in enumerate(edit.findings.lesions)]
    regions.append((edit.labels == LABELS["effusion"], EFFUSION_HU))
    for mask, target in regions:
        mask = mask & edit.changed
        if mask.any():
            out[mask] += target - float(out[mask].mean())
    lesions = (edit.labels >= FIRST_LESION_LABEL) & edit.changed
    if lesions.any():
        dist = distance_transform_edt(~lesions, sampling=spacing)
        lung = np.isin(edit.labels, [*LOBE_LABELS.values(), EMPHYSEMA_LABEL])
        step = float(max(spacing))
        for k in range(bands):
            shell = lung & (dist > k * step) & (dist <= (k + 1) * step)
            if shell.any():
                out[shell] += float(original[shell].mean() - out[shell].mean())
    return out


def blend_into(volume: Volume, work: Grid, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(output HU, regenerated mask) on the input's grid: input + delta resampled where delta can reach."""
    hu = np.asarray(volume.array, np.float32)
    out = hu.copy()
    region = np.zeros(hu.shape, bool)
    support = np.argwhere(delta != 0)
    if not len(support):
        return out, region
    lo = work.origin + (support.min(0) - 1) * np.asarray(work.spacing)
    hi = work.origin + (support.max(0) + 1) * np.asarray(work.spacing)
    corners = np.array([[(lo, hi)[b][d] for d, b in enumerate(bits)] for bits in np.ndindex(2, 2, 2)])
    index = np.linalg.solve(volume.affine, np.c_[corners, np.ones(8)].T)[:3]
    i0 = np.clip(np.floor(index.min(1)).astype(int), 0, np.asarray(hu.shape) - 1)
    i1 = np.clip(np.ceil(index.max(1)).astype(int) + 1, 1, np.asarray(hu.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(i0, i1, strict=True))
    ii = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), axis=-1)
    world = (np.c_[ii.reshape(-1, 3), np.ones(ii[..., 0].size)] @ np.asarray(volume.affine).T)[:, :3]
    change = sample_on(delta, grid_affine(work), world.reshape(*ii.shape[:-1], 3), order=1, cval=0.0)
    out[box] += change
    region[box] = change != 0
    return out, region


def edit_volume(pipe, volume: Volume, *, report: str | None = None, findings: Findings | None = None,
                labels: Volume | None = None, prior: Findings | None = None, remove=(), densities=None,
                seed: int = 0, margin_mm: float = DEFAULT_MARGIN_MM, num_inference_steps: int | None = None,
                guidance_scale: float | None = None, hu_calibration: bool = True, source: dict | None = None,
                progress: bool = True):
    """Edit `volume` (see the module docstring); returns a `GenerationResult` on the input's grid.

    Args:
        pipe: a layout-grounded `ReportToVolumePipeline`.
        volume: the CT: a `Volume` (HU inside `medgen.volume.CT_HU_RANGE`, an axis-aligned grid in any voxel
            order), or the path of a NIfTI file or a DICOM series folder. The result has its shape, voxel order and
            affine exactly (and, saved, a NIfTI input's dtype and scaling).
        report: what to add, as report text (read by the pipeline's reader); or `findings`.
        findings: what to add, as `Findings`.
        labels: the CT's layout label map on its grid (a volume medgen made; `Volume` or path): exact anatomy, and needed to
            `remove` a lesion or change its `densities`.
        prior: the findings that CT already shows (`Findings`, dict or its ``_findings.json``), lesion i with label 20 + i.
        remove: 1-based lesion numbers of `prior` to take out; densities: ``{number: d}`` for prior lesions.
        seed: placement and noise seed. margin_mm: regenerated margin around the change.
        hu_calibration: move each changed lesion's (and new fluid's) mean HU to its target (`calibrate_hu`).
        source: recorded in the sidecar (e.g. ``{"sha256": ..., "name": ...}`` of the input file).

    Raises:
        ValueError / EditInputError: a text-only model, nothing to do, a bad argument, a CT that is not a chest,
            a lobe it lacks, a lesion larger than its lobe, a lesion number it does not have.
    """
    from medgen.io import provenance, reorient, reorient_like
    from medgen.pipelines import layout_stage
    from medgen.pipelines import validation as check
    from medgen.pipelines.result import GenerationResult

    started = time.perf_counter()
    # 1. Check inputs (paths are read here: a CT file or DICOM folder, a label map, a findings JSON)
    volume, labels, prior, source = _read_inputs(volume, labels, prior, source)
    if not pipe.layout_grounded:
        raise ValueError("editing needs a layout-grounded model (its UNet and decoder read the layout); "
                         "this one is text-only: pass --model with a layout-grounded pipeline")
    if not isinstance(volume, Volume):
        raise TypeError(f"`volume` must be a medgen Volume, got {type(volume).__name__}")
    check.check_ct_hu(volume.array, volume.meta.get("path", "the CT"))
    check_edit_numbers(remove, densities)
    seed = check.check_seed(seed)
    margin_mm = check.check_margin_mm(margin_mm)
    steps = check.check_positive_int(
        pipe.config["num_inference_steps"] if num_inference_steps is None else num_inference_steps,
        "num_inference_steps", maximum=min(check.MAX_STEPS, int(pipe.scheduler.num_train_timesteps)))
    guidance = Guidance(text=check.check_guidance(pipe.config["guidance"]["text"] if guidance_scale is None
                                                  else guidance_scale, "guidance_scale"),
                        density=float(pipe.config["guidance"]["density"]))
    # the work runs on the RAS+ grid; the result is mapped back to the input's voxel order and affine
    native = volume
    volume = reorient(native, "RAS")
    labels = reorient(labels, "RAS") if labels is not None else None
    if not np.allclose(volume.affine[:3, :3], np.diag(np.diag(volume.affine[:3, :3]))):
        raise EditInputError("edit reads 3D CTs on an axis-aligned grid (an oblique volume was given)")
    if report is not None and findings is not None:
        raise ValueError("pass either a report or findings to add, not both")
    if report is not None:
        findings = layout_stage.read_reports(pipe.reader, [report])[0].findings if pipe.reader else None
        if findings is None:
            raise ValueError("this model has no report reader: pass findings")
    findings = findings if findings is not None else Findings()
    if findings.is_normal and not remove and not densities:
        raise ValueError("nothing to edit: the findings to add are empty (and nothing to remove or re-density)")
    # 2. Work grid and anatomy
    work = work_grid(pipe, volume)
    points = grid_points(work)
    hu_in = np.asarray(volume.array, np.float32)
    hu_work = sample_on(hu_in, np.asarray(volume.affine), points, order=1, cval=HU_WINDOW[0]).astype(np.float32)
    if labels is not None:
        if labels.shape[:3] != volume.shape[:3] or not np.allclose(labels.affine, volume.affine, atol=1e-3):
            raise EditInputError("the label map is not on the CT's grid (shape and affine must match)")
        anatomy = labels_anatomy(sample_on(np.asarray(labels.array, np.float32), np.asarray(labels.affine), points,
                                           order=0, cval=0.0), work)
    else:
        anatomy = segment_anatomy(hu_work, work)
    edit = edit_layout(anatomy, prior or Findings(), findings, remove=remove, densities=densities, seed=seed)
    # 3. Masked denoising around the change
    weight = feather(edit.changed, work.spacing, margin_mm)
    channels = torch.from_numpy(layout_channels(edit.labels, edit.density))[None].to(pipe.device)
    text = report if report is not None else layout_stage.report_from_findings(edit.findings)
    encoding, null_encoding = pipe.encode_report([text])
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        image = torch.from_numpy(hu_to_intensity(hu_work))[None, None].to(pipe.device)
        known = pipe.autoencoder.encode(image)[0] * float(pipe.config["scale_factor"])
    mask = latent_mask(weight, pipe.latent_factor)
    added_density = [les.density for les in edit.findings.lesions[len(edit.findings.lesions) - len(findings.lesions):]]
    density = torch.tensor([float(np.mean(added_density)) if added_density else float("nan")])
    latents = sample_latents(
        pipe.unet, pipe.scheduler, encoding=encoding, null_encoding=null_encoding, density=density,
        latent_shape=tuple(known.shape), num_inference_steps=steps, guidance=guidance, generator=generator,
        progress=progress, device=pipe.device, layout=pool_layout(channels, pipe.latent_factor),
        inpaint=Inpaint(known, mask, generator),
    )
    # 4. Decode and blend on the input's grid
    edited = pipe.decode(latents, channels)[0]
    if hu_calibration:
        edited = calibrate_hu(edited, hu_work, edit, work.spacing)
    out, region = blend_into(volume, work, weight * (edited - hu_work))
    labels_out = _labels_on_input(volume, work, edit.labels, labels, region)
    record = provenance(
        edit={"source": dict(source or {}), "added": edit.added, "removed": sorted(remove),
              "anatomy": anatomy.source, "margin_mm": margin_mm, "hu_calibration": bool(hu_calibration), "regenerated_voxels": int(region.sum()),
              "work_grid": {"shape": list(work.shape), "spacing": list(work.spacing), "origin": list(work.origin)}},
        report=text, seed=int(seed), num_inference_steps=steps, guidance_scale=guidance.text,
        shape=list(native.shape), spacing=list(native.spacing), orientation=native.orientation,
        **pipe.model_record(), weights_sha256=dict(pipe.weights_sha256), device=str(pipe.device),
        torch_version=torch.__version__, findings=edit.findings.to_dict(),
        layout={"label_table": label_table(len(edit.findings.lesions)), "warnings": list(edit.warnings)},
        elapsed_s=round(time.perf_counter() - started, 3),
    )
    result_volume = reorient_like(Volume(out, volume.affine), native)
    result_volume.meta = record
    storage = {"dtype": "int16", "slope": 1.0, "inter": 0.0, **(native.meta.get("storage") or {})}
    return GenerationResult(volume=result_volume, latent=latents[0].detach().cpu(), provenance=record,
                            labels=reorient_like(labels_out, native), findings=edit.findings,
                            edit_region=reorient_like(Volume(region, volume.affine), native).array,
                            storage=storage)


def _read_inputs(volume, labels, prior, source):
    """Volumes and findings given as paths, read (the CT's sha256 and file name recorded as its source)."""
    from medgen.io import load_nifti, load_volume

    if isinstance(volume, (str, Path)):
        source = {"sha256": source_sha256(volume), "name": Path(volume).name, **(source or {})}
        volume = load_volume(volume, canonical=False)  # the output keeps the input's grid
    elif source is None:
        source = {"sha256": hashlib.sha256(np.ascontiguousarray(volume.array).tobytes()).hexdigest(),
                  "name": "array"}
    if isinstance(labels, (str, Path)):
        labels = load_nifti(labels)
    if isinstance(prior, (str, Path)):
        prior = Findings.from_json(Path(prior).read_text(encoding="utf-8"))
    elif isinstance(prior, dict):
        prior = Findings.from_dict(prior)
    return volume, labels, prior, source


def _labels_on_input(volume: Volume, work: Grid, work_labels: np.ndarray, given: Volume | None,
                     region: np.ndarray) -> Volume:
    """The edited label map on the input's grid: the given label map (or the work-grid anatomy, nearest
    neighbour) everywhere, the edited labels inside the regenerated region. Axis-aligned grids: separable."""
    index = []
    for d in range(3):
        axis = volume.affine[d, d] * np.arange(volume.shape[d]) + volume.affine[d, 3]
        index.append(np.rint((axis - work.origin[d]) / work.spacing[d]).astype(int))
    inside = [(i >= 0) & (i < n) for i, n in zip(index, work.shape, strict=True)]
    resampled = work_labels[np.ix_(*[np.clip(i, 0, n - 1) for i, n in zip(index, work.shape, strict=True)])]
    resampled = resampled * (inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])
    base = np.asarray(given.array).astype(np.uint8) if given is not None else resampled.astype(np.uint8)
    out = np.where(region, resampled, base).astype(np.uint8)
    return Volume(out, np.asarray(volume.affine, float).copy(), {"synthetic": True})


__all__ = ["edit_volume", "EditInputError", "source_sha256", "DEFAULT_MARGIN_MM"]
