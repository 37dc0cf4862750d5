"""Phantom v2: a synthetic adult chest CT (HU) and its label map in MAISI's label space, from a seed.

    from medgen.phantom.v2 import make_phantom_v2
    ct, labels = make_phantom_v2(findings, shape=64, spacing=5.0, seed=3)

The subject (anatomy, tissue HU, trees, findings placement) depends only on the seed and the findings,
never on the grid: the same seed gives the same chest at 64^3 x 5 mm and 512^3 x 0.625 mm. Random
streams (from ``seed``): findings (when none are given), anatomy, trees, texture, findings rendering,
noise. The lungs are scaled on a 5 mm planning grid until they hold the subject's drawn lung volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from medgen.findings import Findings
from medgen.phantom import lesions as v1
from medgen.phantom.chest import check_grid, sample_findings
from medgen.phantom.v2 import abdomen, image, lungs, pathology, ribs, spine, thorax, trees
from medgen.phantom.v2.canvas import Canvas
from medgen.phantom.v2.geom import Grid
from medgen.phantom.v2.labels import AIRWAY, BODY, EFFUSION, EMPHYSEMA, LOBE_IDS, LUNG_IDS, TISSUES, TUMOR
from medgen.phantom.v2.mediastinum import Mediastinum
from medgen.phantom.v2.subject import Subject, sample_params
from medgen.volume import Volume, density_to_hu, make_affine

PHANTOM_VERSION = 2
PLAN_MM = v1.PLAN_MM
MAX_SAMPLES_PER_SLAB = 16_000_000
AERATED = (*LUNG_IDS, EMPHYSEMA)


@dataclass
class PhantomV2:
    """One rendered subject: CT (int16 HU), MAISI-id labels (uint8), voxel tissue classes, ground truth."""

    ct: Volume
    labels: Volume
    tissue: np.ndarray | None
    findings: Findings
    subject: dict
    trees: dict
    lesion_ids: np.ndarray


def paint_anatomy(S: Subject, M: Mediastinum, cv: Canvas, bones: bool = True):
    """Paint the whole anatomy on a canvas, in anatomical order."""
    if bones:
        thorax.paint_body(S, cv)
    thorax.paint_cavity_fat(S, cv)
    lungs.paint_lungs(S, cv)
    if bones:
        abdomen.paint_abdomen(S, cv, S.p["gastric_gas"])
    M.paint(cv)
    if bones:
        spine.paint_spine(S, cv)
        ribs.paint_ribs(S, cv)
        ribs.paint_sternum(S, cv)
        ribs.paint_clavicles(S, cv)
        ribs.paint_scapulae(S, cv)


def plan_grid(S: Subject) -> Grid:
    a, bf, bb, yc, _ = (float(v) for v in S.cavity(np.asarray(S.dome[1])))
    z_lo = min(S.dome.values()) - 1.6 * S.p["dome_depth"][0]
    return Grid.covering((-a - 15, yc - bb - 25, z_lo), (a + 15, yc + bf + 15, max(S.apex.values()) + 10), PLAN_MM)


def calibrate(params: dict, tol: float = 0.008, max_iter: int = 5):
    """(Subject, plan canvas): ``lung_scale`` adjusted until the lobes on the plan grid hold the drawn volume."""
    target = float(params["lung_volume_l"])
    for _ in range(max_iter):
        S = Subject(params)
        cv = Canvas(plan_grid(S))
        paint_anatomy(S, Mediastinum(S), cv, bones=False)
        S.envelope = (mediastinal_envelope(cv), cv.grid)
        cv.paint(cv.full(), S.envelope[0] > 0.5, BODY, "fat", only=LUNG_IDS)
        volume = float(np.isin(cv.label, LUNG_IDS).sum()) * PLAN_MM**3 / 1e6
        if abs(volume / target - 1) < tol:
            break
        params["lung_scale"] = round(float(params["lung_scale"]) * (target / max(volume, 0.1)) ** (1 / 3), 5)
    return S, cv


def mediastinal_envelope(cv: Canvas, radius_mm: float = 16.0) -> np.ndarray:
    """0..1 field on the plan grid: the mediastinal structures closed by a ball of `radius_mm` (the fat between
    the heart, great vessels, trachea and oesophagus belongs to the mediastinum, not to the lungs)."""
    soft = [TISSUES[t] for t in ("blood", "myocardium", "soft", "air", "thyroid")]
    inside = cv.cache["wall"][1] < 0
    med = np.isin(cv.tissue, soft) & ~np.isin(cv.label, LUNG_IDS) & inside
    r = radius_mm / PLAN_MM
    pad = int(np.ceil(r)) + 1
    out = np.zeros(med.shape, np.float32)
    idx = np.nonzero(med)
    if idx[0].size:  # closing = dilation then erosion by a ball, through distance transforms
        box = tuple(slice(max(int(i.min()) - 2 * pad, 0), int(i.max()) + 2 * pad + 1) for i in idx)
        sub = np.pad(med[box], pad)
        dilated = distance_transform_edt(~sub) <= r
        closed = distance_transform_edt(dilated) > r
        out[box] = closed[pad:-pad, pad:-pad, pad:-pad] & inside[box]
    return gaussian_filter(out, 0.6)


def subject_of_seed(seed: int) -> dict:
    """Calibrated anatomy parameters of a seed (``subject["anatomy"]`` of its phantom)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)]
    params = sample_params(streams[1])
    params["gastric_gas"] = round(float(streams[1].uniform(0.12, 0.45)), 3)
    calibrate(params)
    return params


def render_phantom_v2(findings: Findings | None = None, *, shape=64, spacing=5.0, seed: int = 0,
                      supersample: int = 2, noise: bool = True, tissue_map: bool = True) -> PhantomV2:
    """Render one phantom-v2 subject on a centred RAS+ grid (see `make_phantom_v2`); with `tissue_map`, also
    the voxel tissue classes (most frequent sub-sample tissue; None otherwise)."""
    shape, spacing = check_grid(shape, spacing)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed!r}")
    if supersample not in (1, 2, 3, 4):
        raise ValueError(f"`supersample` must be 1..4, got {supersample!r}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)]
    r_findings, r_anatomy, r_trees, r_texture, r_lesions, r_noise = streams
    findings = sample_findings(r_findings) if findings is None else Findings.from_dict(findings.to_dict())
    # subject: parameters, calibrated lungs, mediastinum, tissue HU, trees, findings plan
    params = sample_params(r_anatomy)
    params["gastric_gas"] = round(float(r_anatomy.uniform(0.12, 0.45)), 3)
    hu_table = image.sample_hu_table(r_anatomy)
    S, plan_cv = calibrate(params)
    M = Mediastinum(S)
    lobe_points = _lobe_points(r_trees, plan_cv)
    tree = trees.build_trees(S, M, r_trees, lobe_points)
    plan = pathology.plan_findings(r_lesions, findings, plan_cv.grid, plan_cv.label)
    texture_waves = pathology.wave_params(r_texture, (14.0, 40.0))
    texture_amp, gravity = float(r_texture.uniform(6, 10)), float(r_texture.uniform(2.0, 3.5))

    affine = make_affine(shape, spacing)
    grid = Grid.from_affine(shape, affine)
    ct, lab, tis, allowed = _render_slabs(S, M, plan, plan_cv.grid, grid, hu_table, supersample, tissue_map)

    # trees: vessels, bronchial walls and lumens by analytic voxel fraction, in aerated lung and cavity fat
    f_vessel = image.tube_fraction(grid, np.concatenate([trees.segments(tree["artery"]), trees.segments(tree["vein"])]))
    airway = trees.segments(tree["airway"], min_radius=trees.MIN_LUMEN_MM)
    f_lumen, f_wall = image.tube_fractions(grid, airway, (0.0, 0.2), (1.0, 1.3))
    for frac, value in ((f_vessel, hu_table["blood"]), (f_wall, hu_table["soft"]), (f_lumen, hu_table["air"])):
        frac *= allowed
        ct += frac * (np.float32(value) - ct)
    in_lung = np.isin(lab, (*AERATED, BODY))
    lab[(f_wall >= 0.5) & in_lung & (allowed > 0.5)] = AIRWAY
    # parenchymal texture and the supine gravity gradient, weighted by each voxel's aerated share
    x, y, z = grid.coords()
    lung_share = np.isin(lab, AERATED).astype(np.float32) * (1 - np.maximum(f_vessel, f_wall))
    y_mid = float(S.y0)
    shade = texture_amp * pathology.world_field(texture_waves, x, y, z) + gravity * np.clip((y_mid - y) / 10.0, -8, 8)
    ct += lung_share * shade.astype(np.float32)

    lesion_ids = _draw_lesions(grid, findings, plan, ct, lab, tis, r_lesions)
    if noise:
        sigma = image.noise_sigma(spacing, S.p["noise_hu"], S.p["nps_cutoff"])
        ct += image.ct_noise(r_noise, shape, spacing, sigma, S.p["nps_cutoff"])
    for n, lesion in enumerate(findings.lesions, start=1):
        mask = lesion_ids == n
        if mask.any():
            ct[mask] += density_to_hu(lesion.density) - ct[mask].mean(dtype=np.float64)
        plan["lesions"][n - 1]["volume_ml"] = round(float(mask.sum() * np.prod(spacing) / 1000), 3)

    subject = {"version": PHANTOM_VERSION, "anatomy": S.p, "tissue_hu": hu_table,
               "lung_volume_target_l": S.p["lung_volume_l"],
               "effusion": {k: {kk: vv for kk, vv in v.items()} for k, v in plan["effusion"].items()} or None,
               "emphysema": ({k: plan["emphysema"][k] for k in ("affected", "cluster")} if plan["emphysema"] else None),
               "lesions": plan["lesions"],
               "generations": {"airway": trees.generations(tree["airway"], trees.MIN_LUMEN_MM),
                               "artery": trees.generations(tree["artery"]), "vein": trees.generations(tree["vein"])}}
    meta = {"phantom_seed": int(seed), "phantom_version": PHANTOM_VERSION, "synthetic": True,
            "label_space": "maisi", "findings": findings.to_dict()}
    image_hu = np.clip(np.rint(ct), -1024, 3071).astype(np.int16)
    return PhantomV2(Volume(image_hu, affine, dict(meta)), Volume(lab.astype(np.uint8), affine.copy(), dict(meta)),
                     tis, findings, subject, tree, lesion_ids)


def make_phantom_v2(findings: Findings | None = None, *, shape=64, spacing=5.0, seed: int = 0,
                    supersample: int = 2, noise: bool = True) -> tuple[Volume, Volume]:
    """One phantom-v2 chest CT and its MAISI-id label map.

    Args:
        findings: ground truth to render (lesion centres are filled in); None samples them from `seed`.
        shape: voxels, one int (cube) or (X, Y, Z); spacing: mm, one float or three.
        seed: non-negative int: the subject; same arguments give identical arrays.
        supersample: sub-samples per voxel edge for partial volume (f^3 per voxel).
        noise: add CT noise (FBP-like noise power spectrum).
    Returns:
        (ct, labels): int16 HU and uint8 label Volumes with the affine of `make_affine(shape, spacing)`;
        ``ct.meta["findings"]`` holds the findings with their lesion centres.
    """
    case = render_phantom_v2(findings, shape=shape, spacing=spacing, seed=seed, supersample=supersample, noise=noise,
                             tissue_map=False)
    return case.ct, case.labels


def demo_subject(seed: int, *, shape=64, spacing=5.0, language: str = "en"):
    """(case, report, sidecar) of `medgen data phantom --version 2`: findings (never normal), the v2 phantom and
    its report, all from `seed`. ``case`` has v1's ``image`` / ``labels`` / ``findings`` attributes."""
    from types import SimpleNamespace

    from medgen.reports.writer import write_report

    rng = np.random.default_rng(seed)
    findings = sample_findings(rng, p_normal=0.0)
    case = render_phantom_v2(findings, shape=shape, spacing=spacing, seed=seed, tissue_map=False)
    report = write_report(case.findings, language=language, rng=rng, split="train")
    sidecar = {"synthetic": True, "phantom_version": PHANTOM_VERSION, "phantom_seed": int(seed), "label_space": "maisi",
               "findings": case.findings.to_dict(), "report": report.text}
    return SimpleNamespace(image=case.ct, labels=case.labels, findings=case.findings), report, sidecar


def _lobe_points(rng, plan_cv: Canvas) -> dict[str, np.ndarray]:
    out = {}
    g = plan_cv.grid
    for lobe, lid in LOBE_IDS.items():
        idx = np.argwhere(plan_cv.label == lid).astype(float)
        pts = np.asarray(g.origin) + idx * np.asarray(g.spacing)
        out[lobe] = pts + rng.uniform(-PLAN_MM / 2, PLAN_MM / 2, pts.shape)
    return out


def _render_slabs(S, M, plan, plan_grid_, grid: Grid, hu_table, f: int, tissue_map: bool = True):
    """Paint the anatomy slab by slab on the supersampled grid; voxel HU, labels, tissues and the share of
    each voxel where trees may be drawn (aerated lung, mediastinal fat)."""
    X, Y, Z = grid.shape
    nz = int(max(1, min(Z, MAX_SAMPLES_PER_SLAB // (X * Y * f**3))))
    ct = np.empty(grid.shape, np.float32)
    lab = np.empty(grid.shape, np.uint8)
    tis = np.empty(grid.shape, np.uint8) if tissue_map else None
    allowed = np.empty(grid.shape, np.float32)
    for k0 in range(0, Z, nz):
        k1 = min(Z, k0 + nz)
        sub = Grid((X, Y, k1 - k0), grid.spacing, (grid.origin[0], grid.origin[1], grid.origin[2] + k0 * grid.spacing[2]))
        cv = Canvas(image.supersampled(sub, f))
        paint_anatomy(S, M, cv)
        pathology.paint_effusion(plan, cv)
        pathology.paint_emphysema(plan, plan_grid_, cv)
        hu = image.sample_hu(cv, hu_table)
        ct[:, :, k0:k1] = image.block_mean(hu, f)
        lab[:, :, k0:k1] = image.block_mode(cv.label, f)
        if tissue_map:
            tis[:, :, k0:k1] = image.block_mode(cv.tissue, f)
        fat_in_cavity = (cv.label == BODY) & (cv.tissue == TISSUES["fat"]) & (cv.cache["wall"][1] < 0)
        allowed[:, :, k0:k1] = image.block_fraction(np.isin(cv.label, AERATED) | fat_in_cavity, f)
    return ct, lab, tis, allowed


def _draw_lesions(grid: Grid, findings: Findings, plan: dict, ct, lab, tis, rng) -> np.ndarray:
    """Lesions at their planned centres inside the lung (and fluid), at their target mean HU."""
    lesion_ids = np.zeros(grid.shape, np.uint8)
    space = np.isin(lab, (*AERATED, EFFUSION))
    for n, (lesion, shape) in enumerate(zip(findings.lesions, plan["shapes"], strict=True), start=1):
        painted = v1.paint_lesion(grid, shape, lesion, ct, space, rng)
        if painted is None:
            continue
        box, mask = painted
        lab[box][mask], lesion_ids[box][mask] = TUMOR, n
        if tis is not None:
            tis[box][mask] = TISSUES["lesion"]
    return lesion_ids
