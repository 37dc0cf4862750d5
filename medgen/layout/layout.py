"""Findings + an anatomy -> a layout on the output grid: label map (anatomy, each lesion its own label,
effusion, emphysematous lung) and density map (target density d inside each lesion).

Placement is the phantom's (`medgen.phantom.chest`): lesions inside the requested lobe and zone at the
requested size and margin shape, effusion filling the dependent pleural space by grade, emphysema by grade
and distribution; the same findings, anatomy and seed give the same layout. Each placement is checked
against the anatomy: a lesion that could not be placed wholly inside its aerated lobe gets a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medgen.findings import LOBE_LABELS, Findings
from medgen.layout.labels import (
    EMPHYSEMA_LABEL,
    FIRST_LESION_LABEL,
    MAX_LESIONS,
    label_table,
    layout_channels,
)
from medgen.volume import Volume

# Placement tiers of `medgen.phantom.lesions.place_lesions` from which the core may leave the aerated lobe.
LOOSE_TIER = 3


@dataclass
class Layout:
    """A layout on one grid.

    Args:
        labels: uint8 label map (values of `label_table`), RAS+ affine.
        density: float32 map, the lesion's target density d inside each lesion, 0 elsewhere; same affine.
        findings: the findings laid out, each lesion's ``center_mm`` filled.
        placements: per lesion: centre, placement tier, clearance, volume.
        anatomy: where the anatomy came from (``{"source": "bank", "subject": ..., "similarity": ...}``).
        warnings: placement problems (a lesion outside its aerated lobe, a lesion outside the field of view).
    """

    labels: Volume
    density: Volume
    findings: Findings
    placements: list[dict]
    anatomy: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def label_table(self) -> dict[str, int]:
        return label_table(len(self.findings.lesions))

    def channels(self) -> np.ndarray:
        """(C, X, Y, Z) conditioning tensor (`medgen.layout.labels.CHANNELS`)."""
        return layout_channels(np.asarray(self.labels.array), np.asarray(self.density.array))

    def to_dict(self) -> dict:
        return {"label_table": self.label_table, "placements": self.placements, "anatomy": self.anatomy,
                "warnings": list(self.warnings)}


def make_layout(findings: Findings, *, shape, spacing, seed: int, anatomy: dict | None = None,
                anatomy_info: dict | None = None) -> Layout:
    """Lay `findings` out on an anatomy.

    Args:
        findings: what to lay out (not modified; the layout holds a copy with lesion centres).
        shape, spacing: the output grid (voxels, mm), RAS+ centred on the origin.
        seed: placement seed (lesion positions and shapes, effusion level, emphysema field).
        anatomy: anatomy parameters (`medgen.phantom.anatomy.sample_anatomy` output, e.g. from `AnatomyBank`);
            None draws them from `seed`. ``{"phantom_version": 2, "seed": s}`` is phantom-v2 subject `s`, whose
            seed then also places the findings (`seed` is not used).
        anatomy_info: recorded as `Layout.anatomy` (default: the source "seed").

    Raises:
        ValueError: more than `MAX_LESIONS` lesions.
    """
    if len(findings.lesions) > MAX_LESIONS:
        raise ValueError(f"a layout holds at most {MAX_LESIONS} lesions, got {len(findings.lesions)}")
    findings = Findings.from_dict(findings.to_dict())
    if anatomy is not None and anatomy.get("phantom_version") == 2:
        from medgen.phantom.v2 import render_phantom_v2

        # a v2 anatomy is a subject seed: anatomy, lesion placement and effusion level all follow from it
        case = render_phantom_v2(findings, shape=shape, spacing=spacing, seed=int(anatomy["seed"]), noise=False,
                                 tissue_map=False)
        return layout_of_v2(case, anatomy_info=anatomy_info)
    from medgen.phantom.chest import make_phantom_with_tissues

    case, tissue = make_phantom_with_tissues(findings, shape=shape, spacing=spacing, seed=int(seed), anatomy=anatomy)
    return layout_of_case(case, tissue, seed=int(seed), anatomy_info=anatomy_info)


def layout_of_case(case, tissue: np.ndarray, *, seed: int, anatomy_info: dict | None = None) -> Layout:
    """The layout of a built phantom (`make_phantom_with_tissues` output): the same label map and density map
    `make_layout` gives for its findings, anatomy and seed, beside the phantom's CT (slice training pairs)."""
    from medgen.phantom.chest import TISSUES

    labels = np.asarray(case.labels.array).astype(np.uint8)
    emphysema = np.isin(tissue, [TISSUES["emphysema"], TISSUES["emphysema_cluster"]])
    labels[emphysema & np.isin(labels, list(LOBE_LABELS.values()))] = EMPHYSEMA_LABEL
    return _with_lesions(labels, case.lesion_ids, case.findings, case.subject["lesions"], case.labels.affine,
                         anatomy_info or {"source": "seed", "seed": int(seed)}, {"synthetic": True, "layout_seed": int(seed)})


def layout_of_v2(case, *, anatomy_info: dict | None = None) -> Layout:
    """The layout of a phantom-v2 subject (`medgen.phantom.v2.render_phantom_v2` output): its MAISI-id label map in
    medgen's coarse table, each lesion its own label, emphysematous lung the emphysema label."""
    from medgen.maisi_labels import to_coarse

    seed = int(case.ct.meta["phantom_seed"])
    return _with_lesions(to_coarse(case.labels.array), case.lesion_ids, case.findings, case.subject["lesions"],
                         case.labels.affine, anatomy_info or {"source": "seed", "phantom_version": 2, "seed": seed},
                         {"synthetic": True, "layout_seed": seed, "phantom_version": 2})


def _with_lesions(labels, ids, findings, placements, affine, info: dict, meta: dict) -> Layout:
    """The layout of anatomy labels with lesion instance ids: lesion n -> ``FIRST_LESION_LABEL + n - 1``, its
    density map, and a warning for each lesion that could not be placed as asked."""
    labels = np.asarray(labels).astype(np.uint8)
    density = np.zeros(labels.shape, np.float32)
    warnings = []
    for n, (lesion, placed) in enumerate(zip(findings.lesions, placements, strict=True), start=1):
        mask = ids == n
        labels[mask] = FIRST_LESION_LABEL + n - 1
        density[mask] = lesion.density
        where = f"lesion {n} ({lesion.lobe.replace('_', ' ')}, {lesion.diameter_mm:g} mm)"
        if placed.get("clipped_to_lobe_ml") is not None:
            warnings.append(f"{where} cannot fit its lobe: the {lesion.lobe.replace('_', ' ')} lobe of this anatomy "
                            f"has {placed['clipped_to_lobe_ml']:.0f} ml of aerated lung; the lesion was drawn "
                            "clipped to that lobe")
        elif not mask.any():
            warnings.append(f"{where} lies outside the field of view")
        elif placed["placement_tier"] >= LOOSE_TIER:
            warnings.append(f"{where} does not fit inside the aerated lobe of this anatomy; it was placed in "
                            "the lobe's territory (fluid or pleura)")
    return Layout(Volume(labels, np.asarray(affine, float).copy(), dict(meta)),
                  Volume(density, np.asarray(affine, float).copy(), dict(meta)), findings, placements, info, warnings)
