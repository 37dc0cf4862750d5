"""What an edit changes in the layout: new lesions placed in their lobe, pleural fluid in the dependent
pleural space, a lesion taken out or given a new density. Placement is the phantom's own
(`medgen.phantom.lesions`), run on the lobes of the CT being edited.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import map_coordinates

from medgen.edit.anatomy import EditAnatomy, EditInputError
from medgen.findings import LABELS, LOBE_LABELS, Findings, Lesion
from medgen.layout.labels import FIRST_LESION_LABEL, MAX_LESIONS
from medgen.phantom import lesions as les
from medgen.phantom.anatomy import Grid


@dataclass
class LayoutEdit:
    """The edited layout on the work grid and the voxels whose content changes.

    Args:
        labels: uint8 edited label map.
        density: float32 target density d inside each lesion (0 elsewhere).
        changed: bool, voxels whose label or density the edit changed (what gets regenerated, plus a margin).
        findings: all findings of the edited volume (kept, then added; lesion ``i`` has label 20 + i).
        added: short descriptions of each change, for the sidecar.
        warnings: placement problems that did not stop the edit.
    """

    labels: np.ndarray
    density: np.ndarray
    changed: np.ndarray
    findings: Findings
    added: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_edit_numbers(remove=(), densities=None) -> None:
    """`remove` (lesion numbers) and `densities` (``{number: d}``): positive integers, densities in [0, 1],
    and no lesion both taken out and given a new density."""
    from medgen.volume import check_density

    for n in [*remove, *(densities or {})]:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise EditInputError(f"lesion numbers count from 1, got {n!r}")
    for d in (densities or {}).values():
        check_density(d)
    both = sorted(set(remove) & set(densities or {}))
    if both:
        raise EditInputError(f"lesion {both[0]} is both removed and given a new density: do one or the other")


def edit_layout(anatomy: EditAnatomy, prior: Findings, new: Findings, *, remove=(), densities=None,
                seed: int = 0) -> LayoutEdit:
    """Apply an edit to the layout of a CT.

    Args:
        anatomy: the CT's labels on the work grid (lesions of a medgen-made volume keep their labels).
        prior: the findings the CT already has (a medgen volume's findings JSON; empty otherwise).
        new: findings to add (lesions placed in their lobe; an effusion on its side(s); emphysema is refused).
        remove: 1-based numbers of prior lesions to take out (their voxels become the lobe around them).
        densities: ``{lesion number: d}`` new densities of prior lesions.
        seed: placement seed (lesion positions and shapes).

    Raises:
        EditInputError: a lobe the anatomy lacks, a lesion too large for its lobe, a lesion number that the
            CT does not have, emphysema to add, an effusion on a side that already has one.
    """
    check_edit_numbers(remove, densities)
    labels = anatomy.labels.copy()
    prior = Findings.from_dict(prior.to_dict())
    densities = dict(densities or {})
    numbers = set(remove) | set(densities)
    bad = sorted(n for n in numbers if not 1 <= n <= len(prior.lesions))
    if bad:
        raise EditInputError(f"lesion {bad[0]} is not in this CT's findings ({len(prior.lesions)} lesion(s))")
    if numbers and anatomy.source != "labels":
        raise EditInputError("removing a lesion or changing its density needs the CT's label map (a volume "
                             "medgen made: pass its _labels.nii.gz)")
    if new.emphysema is not None:
        raise EditInputError("adding emphysema is not supported by edit (it changes the whole lung)")
    if len(prior.lesions) - len(set(remove)) + len(new.lesions) > MAX_LESIONS:
        raise EditInputError(f"a layout holds at most {MAX_LESIONS} lesions")
    before = labels.copy()
    out = LayoutEdit(labels, np.zeros(labels.shape, np.float32), np.zeros(labels.shape, bool), prior)
    renumber = _remove_lesions(out, anatomy, sorted(set(remove)))
    if renumber is not None:  # a lesion that only changed its number did not change
        before[before >= FIRST_LESION_LABEL] = renumber[before[before >= FIRST_LESION_LABEL]]
    for n, d in densities.items():
        kept = n - sum(r < n for r in remove)
        out.findings.lesions[kept - 1].density = float(d)
        out.changed |= labels == FIRST_LESION_LABEL + kept - 1
        out.added.append(f"lesion {n}: density {d:g}")
    if new.effusion is not None:
        _add_effusion(out, anatomy.grid, new.effusion, prior.effusion)
    rng = np.random.default_rng(seed)
    _add_lesions(out, anatomy, new.lesions, rng)
    for i, lesion in enumerate(out.findings.lesions):
        out.density[out.labels == FIRST_LESION_LABEL + i] = lesion.density
    out.changed |= out.labels != before
    return out


def _remove_lesions(out: LayoutEdit, anatomy: EditAnatomy, numbers: list[int]) -> np.ndarray | None:
    """Lesion labels become the nearest lobe label; later lesions are renumbered to stay consecutive.
    Returns the renumbering (old label value -> new; removed lesions -> 0), None when nothing is removed."""
    from scipy.ndimage import distance_transform_edt

    if not numbers:
        return None
    lesion = out.labels >= FIRST_LESION_LABEL
    lobes = np.isin(out.labels, list(LOBE_LABELS.values()))
    _, nearest = distance_transform_edt(~lobes, return_indices=True)
    for n in numbers:
        gone = out.labels == FIRST_LESION_LABEL + n - 1
        out.labels[gone] = out.labels[tuple(idx[gone] for idx in nearest)]
        out.changed |= gone
        out.added.append(f"lesion {n} removed")
    keep = [i for i in range(len(out.findings.lesions)) if i + 1 not in numbers]
    renumber = np.zeros(256, np.uint8)
    renumber[:FIRST_LESION_LABEL] = np.arange(FIRST_LESION_LABEL)
    for new_i, old_i in enumerate(keep):
        renumber[FIRST_LESION_LABEL + old_i] = FIRST_LESION_LABEL + new_i
    out.labels[lesion] = renumber[out.labels[lesion]]
    out.findings.lesions = [out.findings.lesions[i] for i in keep]
    return renumber


def _add_effusion(out: LayoutEdit, grid: Grid, effusion, existing) -> None:
    """Pleural fluid filling the most dependent part of each side's lung territory (posterior, then basal),
    the grade's fraction of that side's lung (`medgen.phantom.lesions.EFFUSION_FRACTION`, its middle)."""
    sides = ("right", "left") if effusion.side == "bilateral" else (effusion.side,)
    if existing is not None and (existing.side == "bilateral" or existing.side in sides):
        raise EditInputError(f"this CT already has a {existing.side} effusion")
    _, y, z = grid.coords()
    lo, hi = les.EFFUSION_FRACTION[effusion.grade]
    for side in sides:
        lung = np.isin(out.labels, les.SIDE_LOBES[side])
        if not lung.any():
            raise EditInputError(f"the segmentation finds no {side} lung to put the effusion in")
        zz = np.broadcast_to(z, lung.shape)
        score = np.broadcast_to(y, lung.shape) + 0.3 * (zz - zz[lung].min())
        fluid = lung & (score <= np.quantile(score[lung], (lo + hi) / 2))
        out.labels[fluid] = LABELS["effusion"]
    out.findings.effusion = effusion
    out.added.append(f"{effusion.side} {effusion.grade} effusion")


def _add_lesions(out: LayoutEdit, anatomy: EditAnatomy, lesions: list[Lesion], rng) -> None:
    """Each lesion placed inside its (aerated) lobe by the phantom's tiers and drawn with its shape."""
    if not lesions:
        return
    grid = anatomy.grid
    plan = Grid.covering([grid.axis(d)[0] for d in range(3)], [grid.axis(d)[-1] for d in range(3)], les.PLAN_MM)
    lobes_now = np.where(np.isin(out.labels, list(LOBE_LABELS.values())), out.labels, 0)
    plan_lobes = _resample_nearest(lobes_now, grid, plan)
    plan_fluid = _resample_nearest((out.labels == LABELS["effusion"]).astype(np.uint8), grid, plan) > 0
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    shapes = []
    for lesion in lesions:
        lobe_ml = float((out.labels == LOBE_LABELS[lesion.lobe]).sum() * voxel_ml)
        name = lesion.lobe.replace("_", " ")
        if lobe_ml == 0:
            raise EditInputError(f"the segmentation finds no {name} lobe in this CT")
        lesion_ml = les.lesion_volume_ml(lesion.diameter_mm)
        if lesion_ml > les.MAX_LOBE_FRACTION * lobe_ml:
            raise EditInputError(f"a {lesion.diameter_mm:g} mm lesion ({lesion_ml:.0f} ml) is larger than the "
                                 f"{name} lobe of this CT allows ({lobe_ml:.0f} ml of aerated lobe)")
        shapes.append(les.LesionShape.sample(rng, lesion))
    placements = les.place_lesions(rng, lesions, shapes, plan_lobes, plan_fluid, plan)
    lung_space = np.isin(out.labels, [*LOBE_LABELS.values(), LABELS["effusion"]]) | (out.labels >= FIRST_LESION_LABEL)
    for lesion, shape, placed in zip(lesions, shapes, placements, strict=True):
        lesion = Lesion.from_dict(lesion.to_dict())
        lesion.center_mm = tuple(placed["center_mm"])
        box, core, _, spike = shape.render(grid, np.asarray(lesion.center_mm))
        number = len(out.findings.lesions) + 1
        where = f"added lesion ({lesion.lobe.replace('_', ' ')}, {lesion.diameter_mm:g} mm)"
        if box is None:
            raise EditInputError(f"{where} would lie outside the field of view")
        mask = ((core | (spike >= 0.5)) & lung_space[box]) & (out.labels[box] < FIRST_LESION_LABEL)
        out.labels[box][mask] = FIRST_LESION_LABEL + number - 1
        if placed["placement_tier"] >= 3:
            out.warnings.append(f"{where} does not fit inside the aerated lobe; placed in the lobe's territory")
        out.findings.lesions.append(lesion)
        out.added.append(f"lesion {number}: {lesion.lobe} {lesion.diameter_mm:g} mm d={lesion.density:g} at "
                         f"{list(lesion.center_mm)} mm")


def _resample_nearest(array: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """`array` on grid `src` sampled at the voxel centres of `dst` (nearest neighbour, 0 outside)."""
    coords = np.meshgrid(*[(dst.axis(d) - src.origin[d]) / src.spacing[d] for d in range(3)], indexing="ij")
    return map_coordinates(array, coords, order=0, mode="constant", cval=0).astype(array.dtype)
