"""Findings placed in a real anatomy in MAISI's label space.

The MAISI anatomy is mapped to medgen's coarse table (`medgen.maisi_labels.to_coarse`) and the findings
are placed the way `medgen.edit.place` places them in a real CT, with the phantom's own placement
(`medgen.phantom.lesions`: shapes, tiers, 5 mm planning grid; this package sits below `medgen.edit`, so the
few lines of glue are its own): pleural fluid first, filling the most dependent part of that side's lung by
grade (the middle of the grade's fraction); then each lesion inside its lobe and zone at its size and margin
shape, with the usual warning when it does not fit inside the aerated lobe, refused when larger than half
its lobe. Emphysema follows the phantom's regional field (grade -> affected fraction of the lung, upper
predominance).

In the MAISI label map lesions become ``lung tumor`` (23), pleural fluid `MEDGEN_EFFUSION_ID` (210) and
emphysematous lung `MEDGEN_EMPHYSEMA_ID` (211); every other voxel keeps the anatomy's MAISI id. The coarse map
keeps lesion i as ``20 + i - 1`` so each reported lesion has its own voxels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medgen.findings import LABELS, LOBE_LABELS, Findings, Lesion
from medgen.layout.labels import EMPHYSEMA_LABEL, FIRST_LESION_LABEL, MAX_LESIONS, label_table
from medgen.maisi_labels import (
    LUNG_TUMOR_ID,
    MAISI_LABELS,
    MEDGEN_EFFUSION_ID,
    MEDGEN_EMPHYSEMA_ID,
    to_coarse,
)
from medgen.render.maisi.anatomy import AnatomyError
from medgen.volume import Volume

MAX_LOBE_FRACTION = 0.5  # a lesion may take at most this fraction of its lobe
LOOSE_TIER = 3  # placement tiers from which the core may leave the aerated lobe (`medgen.phantom.lesions`)
SEG_NAMES = {LUNG_TUMOR_ID: "lesion_lung_tumor", MEDGEN_EFFUSION_ID: "effusion", MEDGEN_EMPHYSEMA_ID: "emphysema",
             MAISI_LABELS["airway"]: "airway", MAISI_LABELS["heart"]: "heart"}


@dataclass
class MaisiLayout:
    """Findings laid out in a MAISI anatomy on the output grid.

    Args:
        labels: uint8 MAISI ids (+ 210 effusion, 211 emphysema; lesions are 23), RAS+ affine.
        coarse: uint8 medgen coarse table (`medgen.layout.labels.label_table`), lesion i = 20 + i - 1.
        density: float32 target density d inside each lesion, 0 elsewhere.
        findings: the findings laid out, each lesion's ``center_mm`` filled.
        anatomy: where the anatomy came from.
        placements: one line per placed finding.
        warnings: placement problems that did not stop the layout.
        emphysema: target fractions of the emphysema field (None without emphysema).
    """

    labels: Volume
    coarse: Volume
    density: Volume
    findings: Findings
    anatomy: dict
    placements: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    emphysema: dict | None = None

    def label_table(self) -> dict[str, int]:
        """SEG-ready name -> MAISI id of every label present (names with underscores)."""
        names = {v: k for k, v in MAISI_LABELS.items()}
        present = [int(v) for v in np.unique(np.asarray(self.labels.array)) if v > 0]
        return {SEG_NAMES.get(v, names.get(v, f"label_{v}").replace(" ", "_")): v for v in present}

    def to_dict(self) -> dict:
        return {"label_space": "maisi", "label_table": self.label_table(),
                "coarse_label_table": label_table(len(self.findings.lesions)),
                "medgen_ids": {"effusion": MEDGEN_EFFUSION_ID, "emphysema": MEDGEN_EMPHYSEMA_ID},
                "anatomy": self.anatomy, "placements": list(self.placements), "warnings": list(self.warnings),
                **({"emphysema": self.emphysema} if self.emphysema else {})}


def place_findings(anatomy: np.ndarray, affine, findings: Findings, *, seed: int, info: dict | None = None) -> MaisiLayout:
    """Lay `findings` out in a MAISI-id anatomy (X, Y, Z) on the grid of `affine`.

    Raises:
        AnatomyError: a lobe or side the anatomy lacks, a lesion too large for its lobe, or more lesions than a
            layout holds.
    """
    from medgen.phantom.anatomy import Grid

    anatomy = np.asarray(anatomy).astype(np.uint8)
    if len(findings.lesions) > MAX_LESIONS:
        raise AnatomyError(f"a layout holds at most {MAX_LESIONS} lesions, got {len(findings.lesions)}")
    grid = Grid.from_affine(anatomy.shape, affine)
    coarse = to_coarse(anatomy)
    placed = Findings()
    added, warnings = [], []
    if findings.effusion is not None:
        add_effusion(coarse, grid, findings.effusion)
        placed.effusion = findings.effusion
        added.append(f"{findings.effusion.side} {findings.effusion.grade} effusion")
    rng = np.random.default_rng(int(seed))
    placed.lesions = add_lesions(coarse, grid, findings.lesions, rng, added, warnings)
    density = np.zeros(coarse.shape, np.float32)
    for i, lesion in enumerate(placed.lesions):
        density[coarse == FIRST_LESION_LABEL + i] = lesion.density
    labels = anatomy.copy()
    labels[coarse >= FIRST_LESION_LABEL] = LUNG_TUMOR_ID
    labels[coarse == LABELS["effusion"]] = MEDGEN_EFFUSION_ID
    emphysema_info = None
    if findings.emphysema is not None:
        affected, emphysema_info = emphysema_region(coarse, grid, findings.emphysema, seed)
        labels[affected] = MEDGEN_EMPHYSEMA_ID
        coarse[affected] = EMPHYSEMA_LABEL
        placed.emphysema = findings.emphysema
        added.append(f"{findings.emphysema.grade} emphysema ({findings.emphysema.distribution})")
    affine = np.asarray(affine, float)
    meta = {"synthetic": True, "layout_seed": int(seed)}
    return MaisiLayout(Volume(labels, affine.copy(), dict(meta)), Volume(coarse, affine.copy(), dict(meta)),
                       Volume(density, affine.copy(), dict(meta)), placed, dict(info or {}), added, warnings,
                       emphysema_info)


def add_effusion(coarse: np.ndarray, grid, effusion) -> None:
    """Pleural fluid (coarse ``effusion``) in the most dependent part of each side's lobes (posterior, then
    basal), the middle of the grade's fraction of that side's lung; in place."""
    from medgen.phantom.lesions import EFFUSION_FRACTION, SIDE_LOBES

    _, y, z = grid.coords()
    lo, hi = EFFUSION_FRACTION[effusion.grade]
    for side in (("right", "left") if effusion.side == "bilateral" else (effusion.side,)):
        lung = np.isin(coarse, SIDE_LOBES[side])
        if not lung.any():
            raise AnatomyError(f"the anatomy has no {side} lung to put the effusion in")
        zz = np.broadcast_to(z, lung.shape)
        score = np.broadcast_to(y, lung.shape) + 0.3 * (zz - zz[lung].min())
        coarse[lung & (score <= np.quantile(score[lung], (lo + hi) / 2))] = LABELS["effusion"]


def add_lesions(coarse: np.ndarray, grid, lesions, rng, added: list, warnings: list) -> list[Lesion]:
    """Each lesion placed in its lobe by the phantom's tiers and drawn with its shape (coarse ``20 + i``), in
    place; returns the lesions with their centres."""
    from scipy.ndimage import map_coordinates

    from medgen.phantom import lesions as les
    from medgen.phantom.anatomy import Grid

    if not lesions:
        return []
    plan = Grid.covering([grid.axis(d)[0] for d in range(3)], [grid.axis(d)[-1] for d in range(3)], les.PLAN_MM)
    coords = np.meshgrid(*[(plan.axis(d) - grid.origin[d]) / grid.spacing[d] for d in range(3)], indexing="ij")

    def on_plan(array):
        return map_coordinates(array, coords, order=0, mode="constant", cval=0).astype(array.dtype)

    plan_lobes = on_plan(np.where(np.isin(coarse, list(LOBE_LABELS.values())), coarse, 0).astype(np.uint8))
    plan_fluid = on_plan((coarse == LABELS["effusion"]).astype(np.uint8)) > 0
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    shapes = []
    for lesion in lesions:
        name = lesion.lobe.replace("_", " ")
        lobe_ml = float((coarse == LOBE_LABELS[lesion.lobe]).sum() * voxel_ml)
        if lobe_ml == 0:
            raise AnatomyError(f"the anatomy has no {name} lobe")
        lesion_ml = np.pi / 6 * lesion.diameter_mm**3 / 1000.0
        if lesion_ml > MAX_LOBE_FRACTION * lobe_ml:
            raise AnatomyError(f"a {lesion.diameter_mm:g} mm lesion ({lesion_ml:.0f} ml) is larger than the {name} "
                               f"lobe of this anatomy allows ({lobe_ml:.0f} ml of lobe)")
        shapes.append(les.LesionShape.sample(rng, lesion))
    placements = les.place_lesions(rng, lesions, shapes, plan_lobes, plan_fluid, plan)
    lung_space = np.isin(coarse, [*LOBE_LABELS.values(), LABELS["effusion"]])
    out = []
    for lesion, shape, where in zip(lesions, shapes, placements, strict=True):
        lesion = Lesion.from_dict(lesion.to_dict())
        lesion.center_mm = tuple(where["center_mm"])
        box, core, _, spike = shape.render(grid, np.asarray(lesion.center_mm))
        what = f"lesion {len(out) + 1} ({lesion.lobe.replace('_', ' ')}, {lesion.diameter_mm:g} mm)"
        if box is None:
            raise AnatomyError(f"{what} would lie outside the field of view")
        mask = (core | (spike >= 0.5)) & lung_space[box] & (coarse[box] < FIRST_LESION_LABEL)
        coarse[box][mask] = FIRST_LESION_LABEL + len(out)
        if where["placement_tier"] >= LOOSE_TIER:
            warnings.append(f"{what} does not fit inside the aerated lobe of this anatomy; it was placed in the "
                            "lobe's territory (fluid or pleura)")
        out.append(lesion)
        added.append(f"lesion {len(out)}: {lesion.lobe} {lesion.diameter_mm:g} mm d={lesion.density:g} at "
                     f"{list(lesion.center_mm)} mm")
    return out


def emphysema_region(coarse: np.ndarray, grid, emphysema, seed: int) -> tuple[np.ndarray, dict]:
    """Affected lung (bool) of an emphysema finding: the top `affected_fraction` of the phantom's regional
    field (5 mm planning grid, upper-tilted for upper predominance) plus fine texture, over the aerated lobes."""
    from medgen.phantom.anatomy import Grid, resample, smooth_field
    from medgen.phantom.lesions import PLAN_MM, apply_emphysema, emphysema_plan

    rng = np.random.default_rng([int(seed), 11])
    lung = np.isin(coarse, list(LOBE_LABELS.values()))
    if not lung.any():
        raise AnatomyError("the anatomy has no aerated lung to put emphysema in")
    plan = Grid.covering([grid.axis(d)[0] for d in range(3)], [grid.axis(d)[-1] for d in range(3)], PLAN_MM)
    ijk = [np.clip(np.rint((plan.axis(d) - grid.origin[d]) / grid.spacing[d]).astype(int), 0, grid.shape[d] - 1)
           for d in range(3)]
    plan_lobes = np.where(lung, coarse, 0)[np.ix_(*ijk)]
    regional, info = emphysema_plan(rng, emphysema, plan_lobes, plan)
    fine_grid = Grid.covering(plan.origin, [plan.axis(d)[-1] for d in range(3)], 2.5)
    fine = resample(smooth_field(rng, fine_grid, 2.5), fine_grid, grid)
    affected, _ = apply_emphysema(info, resample(regional, plan, grid), fine, lung)
    return affected, {**info, "method": "phantom regional field, top affected_fraction of aerated lung"}
