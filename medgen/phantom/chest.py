"""Procedural synthetic chest CT (Hounsfield units) with exact ground truth: image, label map, findings.

The anatomy (`medgen.phantom.anatomy`) and the findings (`medgen.phantom.lesions`) are defined in RAS+ world
millimetres (+x = patient's right, +y = anterior, +z = superior) and sampled at the voxel centres of
any grid, so a seed gives the same subject at 64^3 x 5 mm, 128^3 x 2.5 mm or 256^3 x 1.25 mm.

Random streams (all from `seed`): findings (only when none are given), anatomy, vessel trees,
parenchymal texture, findings rendering, image noise. Anatomy does not depend on the findings, so
``make_phantom(f, seed=s)`` and ``make_phantom(Findings(), seed=s)`` are the same subject with and
without findings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from medgen.findings import (
    EFFUSION_GRADES,
    EMPHYSEMA_GRADES,
    LABELS,
    LOBE_LABELS,
    LOBES,
    MARGINS,
    SIDES,
    Effusion,
    Emphysema,
    Findings,
    Lesion,
)
from medgen.phantom import lesions as les
from medgen.phantom.anatomy import (
    CORTICAL_MM,
    LEFT,
    RIGHT,
    Grid,
    Thorax,
    partial_volume,
    resample,
    sample_anatomy,
    smooth_field,
    tubes,
)
from medgen.volume import Volume, density_to_hu, make_affine

PHANTOM_VERSION = 1
TISSUES = {name: code for code, name in enumerate((
    "air", "skin", "fat", "muscle", "soft", "liver", "blood", "lung", "emphysema", "emphysema_cluster",
    "vessel", "airway", "trabecular", "cortical", "cartilage", "disc", "csf", "effusion", "lesion", "gas",
    "airway_wall"))}
# per-subject mean HU of each tissue is drawn from these ranges, inside its target range (tests/test_phantom.py)
TISSUE_HU = {"air": (-1000, -1000), "skin": (30, 50), "fat": (-110, -90), "muscle": (38, 55), "soft": (32, 48),
             "liver": (50, 60), "blood": (36, 50), "lung": (-862, -842), "emphysema": (-938, -924),
             "emphysema_cluster": (-990, -972), "vessel": (36, 50), "airway": (-1000, -990),
             "trabecular": (230, 360), "cortical": (780, 1080), "cartilage": (90, 130), "disc": (70, 100),
             "csf": (5, 15), "effusion": (6, 14), "lesion": (0, 0), "gas": (-1000, -990),
             "airway_wall": (32, 48)}
LUNG_TISSUES = [TISSUES[t] for t in ("lung", "emphysema", "emphysema_cluster")]
LOBE_VALUES = list(LOBE_LABELS.values())
LOBE_WEIGHTS = (0.26, 0.1, 0.22, 0.24, 0.18)  # right upper, middle, lower, left upper, lower
# intrapulmonary trees: (targets per lung, leaf radius mm)
TREES = {"artery": (80, 1.0), "vein": (64, 1.0), "bronchus": (16, 1.3)}


@dataclass
class PhantomCase:
    """One synthetic subject.

    Args:
        image: int16 HU, affine = make_affine(shape, spacing) (RAS+, centred).
        labels: uint8 label map with values from `medgen.findings.LABELS`, same affine.
        findings: ground truth; each Lesion.center_mm filled (RAS+ world mm).
        subject: json-serialisable anatomy parameters and the measurements of the findings.
        lesion_ids: uint8 map, n > 0 where the voxel belongs to ``findings.lesions[n - 1]`` (0 elsewhere).
    """

    image: Volume
    labels: Volume
    findings: Findings
    subject: dict
    lesion_ids: np.ndarray | None = None


def sample_findings(rng: np.random.Generator, p_normal: float = 0.25) -> Findings:
    """Random findings: normal with probability `p_normal`, else 0-3 lesions and sometimes effusion/emphysema."""
    if not 0.0 <= p_normal <= 1.0:
        raise ValueError(f"`p_normal` must be in [0, 1], got {p_normal}")
    if rng.random() < p_normal:
        return Findings()
    lesions = [Lesion(lobe=str(rng.choice(LOBES, p=LOBE_WEIGHTS)),
                      diameter_mm=round(float(np.exp(rng.uniform(np.log(8), np.log(50)))), 1),
                      density=round(float(rng.uniform(0, 1)), 3), margin=str(rng.choice(MARGINS)))
               for _ in range(int(rng.choice(4, p=(0.15, 0.45, 0.28, 0.12))))]
    effusion = Effusion(str(rng.choice(SIDES)), str(rng.choice(EFFUSION_GRADES))) if rng.random() < 0.3 else None
    emphysema = (Emphysema(str(rng.choice(EMPHYSEMA_GRADES)), bool(rng.random() < 0.6))
                 if rng.random() < 0.25 else None)
    findings = Findings(lesions, effusion, emphysema)
    if findings.is_normal:  # an abnormal subject has at least one finding
        findings.lesions.append(Lesion(lobe=str(rng.choice(LOBES, p=LOBE_WEIGHTS)),
                                       diameter_mm=round(float(rng.uniform(8, 30)), 1),
                                       density=round(float(rng.uniform(0, 1)), 3), margin=str(rng.choice(MARGINS))))
    return findings


def anatomy_of_seed(seed: int) -> dict:
    """The anatomy parameters `make_phantom` draws for `seed` (its subject's ``subject["anatomy"]``)."""
    return sample_anatomy(np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(6)[1]))


def make_phantom(findings: Findings | None = None, *, shape=64, spacing=5.0, seed: int = 0,
                 anatomy: dict | None = None, center_mm=None) -> PhantomCase:
    """Build one phantom chest CT; see `make_phantom_with_tissues` (this drops the tissue map)."""
    return make_phantom_with_tissues(findings, shape=shape, spacing=spacing, seed=seed, anatomy=anatomy,
                                     center_mm=center_mm)[0]


def make_phantom_with_tissues(findings: Findings | None = None, *, shape=64, spacing=5.0,
                              seed: int = 0, anatomy: dict | None = None,
                              center_mm=None) -> tuple[PhantomCase, np.ndarray]:
    """Build one phantom; also returns the uint8 tissue map (values of `TISSUES`) used by tests and tables.

    Args:
        findings: ground truth to render; None samples them with `sample_findings` from `seed`.
        shape: voxels, one int (cube) or (X, Y, Z).
        spacing: mm, one float or (sx, sy, sz).
        seed: non-negative int; same arguments give identical arrays.
        anatomy: anatomy parameters (`sample_anatomy` output, e.g. another subject's ``subject["anatomy"]``)
            to use instead of the ones drawn from `seed`; every other draw is unchanged.
        center_mm: world (RAS mm) centre of the grid (default: the origin). The phantom is defined in mm, so
            a small grid off the centre is a patch of the same subject (refiner training builds such patches
            at fine spacing without the whole fine volume).
    """
    # 1. Check inputs, split the seed into independent streams
    shape, spacing = check_grid(shape, spacing)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed!r}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)]
    r_findings, r_anatomy, r_trees, r_texture, r_lesions, r_noise = streams
    findings = sample_findings(r_findings) if findings is None else Findings.from_dict(findings.to_dict())
    affine = make_affine(shape, spacing)
    if center_mm is not None:
        affine[:3, 3] += np.asarray(center_mm, dtype=float).reshape(3)
    grid = Grid.from_affine(shape, affine)

    # 2. Subject: anatomy, tissue HU, vessel and airway trees, textures (independent of the findings)
    params = sample_anatomy(r_anatomy)
    if anatomy is not None:
        params = dict(anatomy)
    thorax = Thorax(params)
    hu_table = {k: round(float(r_anatomy.uniform(*v)), 1) for k, v in TISSUE_HU.items()}
    noise_std = round(float(r_anatomy.uniform(10, 18)), 2)
    trees = _grow_trees(r_trees, thorax)
    plan = _plan_grid(thorax)
    plan_lobes = _lung_territory(thorax, plan)
    texture = smooth_field(r_texture, plan, 12.0)
    texture_amp, gravity = float(r_texture.uniform(5, 10)), float(r_texture.uniform(10, 25))

    # 3. Plan the findings on the planning grid: effusion level, emphysema field, lesion centres
    effusion = les.effusion_thresholds(r_lesions, findings.effusion, thorax, plan_lobes, plan)
    plan_fluid = les.apply_effusion(thorax, effusion, plan_lobes, plan)
    emph = les.emphysema_plan(r_lesions, findings.emphysema, np.where(plan_fluid, 0, plan_lobes), plan)
    shapes = [les.LesionShape.sample(r_lesions, lesion) for lesion in findings.lesions]
    placements = les.place_lesions(r_lesions, findings.lesions, shapes, plan_lobes, plan_fluid, plan)
    oversized = les.oversized(findings.lesions, plan_lobes, plan_fluid, plan)
    for lesion, placed, lobe_ml in zip(findings.lesions, placements, oversized, strict=True):
        lesion.center_mm = tuple(placed["center_mm"])
        if lobe_ml is not None:  # drawn inside its own lobe only: it must not take the other lobes and the fluid
            placed["clipped_to_lobe_ml"] = round(lobe_ml, 1)

    # 4. Paint the anatomy on the image grid (tissue classes and labels)
    tissue, labels = _paint_anatomy(thorax, grid)
    fluid = les.apply_effusion(thorax, effusion, np.where(np.isin(labels, LOBE_VALUES), labels, 0), grid)
    tissue[fluid], labels[fluid] = TISSUES["effusion"], LABELS["effusion"]
    if emph is not None:
        fine = smooth_field(r_lesions, grid, max(2.0, 0.6 * grid.voxel_mm))
        affected, cluster = les.apply_emphysema(emph[1], resample(emph[0], plan, grid), fine,
                                                tissue == TISSUES["lung"])
        tissue[affected], tissue[cluster] = TISSUES["emphysema"], TISSUES["emphysema_cluster"]

    # 5. Intensities: tissue HU, parenchymal texture, vessels and airways by partial volume
    lut = np.array([hu_table[name] for name in TISSUES], np.float32)
    hu = lut[tissue]
    aerated = np.isin(labels, LOBE_VALUES)
    lung_space = aerated | (labels == LABELS["effusion"])  # where lesions may lie
    parenchyma = np.isin(tissue, LUNG_TISSUES)
    _, y, _ = grid.coords()
    y_mid = (thorax.y_cav_ant + thorax.y_cav_post) / 2
    shade = texture_amp * resample(texture, plan, grid) + gravity * np.clip((y_mid - y) / 150.0, -0.5, 0.5)
    hu[parenchyma] += shade[parenchyma]
    _draw_trees(grid, trees, hu, tissue, labels, aerated, hu_table)

    # 6. Lesions, noise, exact lesion means
    lesion_id = np.zeros(grid.shape, np.uint8)
    for n, (lesion, shape_) in enumerate(zip(findings.lesions, shapes, strict=True), start=1):
        space = labels == LABELS[lesion.lobe] if oversized[n - 1] is not None else lung_space
        _draw_lesion(grid, shape_, lesion, n, hu, tissue, labels, lesion_id, space, r_lesions)
    noise = gaussian_filter(r_noise.standard_normal(grid.shape).astype(np.float32), 0.7)
    hu += noise * (noise_std / max(float(noise.std()), 1e-6))
    for n, lesion in enumerate(findings.lesions, start=1):
        mask = lesion_id == n
        if mask.any():  # empty only when the lesion lies outside the field of view
            hu[mask] += density_to_hu(lesion.density) - hu[mask].mean(dtype=np.float64)
        placements[n - 1]["volume_ml"] = round(float(mask.sum() * np.prod(grid.spacing) / 1000), 3)

    # 7. Assemble the case
    subject = {
        "version": PHANTOM_VERSION, "anatomy": params, "tissue_hu": hu_table, "noise_std": noise_std,
        "lung_volume_ml": {name: round(float(np.isin(plan_lobes, les.SIDE_LOBES[name]).sum())
                                       * les.PLAN_MM**3 / 1000, 1) for name in ("right", "left")},
        "effusion": effusion or None, "emphysema": emph[1] if emph is not None else None, "lesions": placements,
    }
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    if emph is not None:
        lung = np.isin(labels, LOBE_VALUES)
        laa = float((image[lung] < -950).mean() * 100) if lung.any() else 0.0  # a patch may hold no lung
        subject["emphysema"]["laa950_percent"] = round(laa, 2)
    meta = {"phantom_seed": int(seed), "synthetic": True}
    case = PhantomCase(Volume(image, affine, dict(meta)), Volume(labels, affine.copy(), dict(meta)), findings, subject,
                       lesion_id)
    return case, tissue


def check_grid(shape, spacing):
    shape_t = (shape,) * 3 if np.isscalar(shape) else tuple(shape)
    if len(shape_t) != 3 or not all(isinstance(s, (int, np.integer)) and s >= 8 for s in shape_t):
        raise ValueError(f"`shape` must be an int >= 8 or three of them (X, Y, Z), got {shape!r}")
    spacing_t = (spacing,) * 3 if np.isscalar(spacing) else tuple(spacing)
    if len(spacing_t) != 3 or not all(np.isfinite(float(s)) and float(s) > 0 for s in spacing_t):
        raise ValueError(f"`spacing` must be a positive float or three of them (mm), got {spacing!r}")
    return tuple(int(s) for s in shape_t), tuple(float(s) for s in spacing_t)


def _plan_grid(thorax: Thorax) -> Grid:
    z_lo = min(thorax.lung_extent(s)[0] for s in (RIGHT, LEFT)) - 10
    z_hi = max(thorax.lung_extent(s)[1] for s in (RIGHT, LEFT)) + 5
    return Grid.covering((-160, thorax.y_cav_post - 5, z_lo), (160, thorax.y_cav_ant + 5, z_hi), les.PLAN_MM)


def grow_tree(rng: np.random.Generator, root, targets, r_leaf: float, gamma: float = 2.7) -> np.ndarray:
    """Branching tube tree from `root` to every target (recursive principal-axis split of the targets).

    Each node advances part of the way toward the centroid of the targets it serves, then splits them
    in two; radii follow Murray's law, ``r = r_leaf * n_served ** (1 / gamma)``, so branches taper to
    the periphery. Returns (M, 8) tube segments.
    """
    targets = np.asarray(targets, float)
    steps = rng.uniform(0.3, 0.55, len(targets))  # one draw per branching node (n - 1 of them)
    splits = rng.uniform(0.35, 0.65, len(targets))
    segments, stack, node = [], [(np.asarray(root, float), targets)], 0
    while stack:
        p, pts = stack.pop()
        n = len(pts)
        r = r_leaf * n ** (1.0 / gamma)
        if n == 1:
            segments.append((*p, *pts[0], r, 0.7 * r))
            continue
        c = pts.mean(axis=0)
        q = p + steps[node] * (c - p)
        segments.append((*p, *q, r, r * 0.95))
        d = pts - c
        axis = np.linalg.eigh(d.T @ d)[1][:, -1] if n > 6 else np.eye(3)[np.argmax((d * d).sum(axis=0))]
        order = np.argsort(d @ axis)
        k = min(max(round(n * splits[node]), 1), n - 1)
        node += 1
        stack += [(q, pts[order[:k]]), (q, pts[order[k:]])]
    return np.asarray(segments).reshape(-1, 8)


def _grow_trees(rng, thorax: Thorax) -> dict[str, np.ndarray]:
    """Pulmonary arteries, veins and bronchi: one tree per lobe from the hilum to random points of the lobe."""
    z_lo = min(thorax.lung_extent(s)[0] for s in (RIGHT, LEFT))
    n = 12000
    pts = np.column_stack([rng.uniform(-155, 155, n), rng.uniform(thorax.y_cav_post, thorax.y_cav_ant, n),
                           rng.uniform(z_lo, max(thorax.apex.values()), n)])
    lobe_of = thorax.lobes(pts[:, 0], pts[:, 1], pts[:, 2])
    hila = thorax.hila()
    out = {}
    for kind, (per_lung, r_leaf) in TREES.items():
        segs = []
        for lobe in LOBES:
            sign = RIGHT if lobe.startswith("right") else LEFT
            inside = pts[lobe_of == LOBE_LABELS[lobe]]
            side_total = np.isin(lobe_of, les.SIDE_LOBES["right" if sign == RIGHT else "left"]).sum()
            k = max(2, int(round(per_lung * len(inside) / max(side_total, 1))))
            targets = inside[rng.choice(len(inside), size=min(k, len(inside)), replace=False)]
            if len(targets):
                segs.append(grow_tree(rng, hila[kind][sign], targets, r_leaf, gamma=2.5))
        out[kind] = np.concatenate(segs)
    return out


def _lung_territory(thorax: Thorax, grid: Grid, cav=None) -> np.ndarray:
    """Lobe labels of the lungs on `grid`, less the mediastinal tubes (great vessels, airways) crossing them."""
    lobes = thorax.lobes(*grid.coords(), cav)
    for segs in (*thorax.mediastinal_tubes().values(), thorax.clavicles()):
        for flat, dist, rad in tubes(grid, segs):
            lobes.flat[flat[dist <= rad + 2.0]] = 0
    return lobes


def _paint_anatomy(thorax: Thorax, grid: Grid):
    """Tissue classes (`TISSUES`) and labels (`LABELS`) of the anatomy at the voxel centres."""
    p, T = thorax.p, TISSUES
    x, y, z = grid.coords()
    r, th, phi = thorax._polar(x, y)
    depth = thorax.body_radius(th, z) - r
    fat_s, muscle_s, rib_s, cav_s = thorax.layers(th, phi, z)
    tissue = np.zeros(grid.shape, np.uint8)
    body = depth > 0
    tissue[body] = T["skin"]
    tissue[depth > fat_s] = T["fat"]
    tissue[depth > muscle_s] = T["muscle"]
    cav = depth - cav_s
    incav = cav > 0
    tissue[incav] = T["soft"]
    labels = np.where(body, LABELS["body"], LABELS["background"]).astype(np.uint8)
    # upper abdomen: liver under the right dome, diaphragm, gastric air under the left dome
    zd = thorax.diaphragm(x, y)
    below = incav & (z < zd)
    tissue[below & (x > p["med_x"] - 35)] = T["liver"]
    tissue[below & (z > zd - 5)] = T["muscle"]
    gas_c = (p["med_x"] - 60, thorax.y_cav_ant - 45, thorax.dome[LEFT] - 28)
    gas = below & (((x - gas_c[0]) / 28) ** 2 + ((y - gas_c[1]) / 22) ** 2 + ((z - gas_c[2]) / 14) ** 2 < 1)
    tissue[gas & (z > gas_c[2])] = T["gas"]
    # mediastinum: fat band between the lungs, heart in its pericardial fat
    medi = incav & (np.abs(x - p["med_x"]) < thorax.med_half(y, z)) & (z > zd)
    rho = thorax.heart_rho(x, y, z)
    peri = incav & (rho < 1 + p["pericardial_fat"] / p["heart_axes"][2])
    peri &= z > zd - 12  # the heart rests on the diaphragm
    for mask, name in ((medi | peri, "fat"), (peri & (rho < 1), "blood")):
        tissue[mask], labels[mask] = T[name], LABELS["mediastinum"]
    lobes = _lung_territory(thorax, grid, cav)
    lung = lobes > 0
    tissue[lung], labels[lung] = T["lung"], lobes[lung]
    # great vessels, oesophagus, trachea and main bronchi (wall then lumen)
    med_tubes = thorax.mediastinal_tubes()
    for key, name, label, wall in (("vessels", "blood", "mediastinum", 0.0), ("oesophagus", "soft", "mediastinum", 0.0),
                                   ("airway", "airway_wall", "mediastinum", 2.0), ("airway", "airway", "airway", 0.0)):
        for flat, dist, rad in tubes(grid, med_tubes[key]):
            flat = flat[dist <= rad + wall]
            flat = flat[body.flat[flat]]
            tissue.flat[flat], labels.flat[flat] = T[name], LABELS[label]
    # bones: cartilage, spinal canal and discs first, then cortical shell and trabecular core
    sdf, cart = thorax.bone_sdf(grid, phi, depth, rib_s)
    for flat, dist, rad in tubes(grid, thorax.clavicles()):
        np.minimum.at(sdf.reshape(-1), flat, dist - rad)
    tissue[body & (cart <= 0)] = T["cartilage"]
    canal = np.broadcast_to(np.hypot(x, y - (thorax.y_vb - p["vb_r"] - 9.0)) < 8.5, grid.shape)
    disc = np.broadcast_to(np.hypot(x / 1.15, y - thorax.y_vb) < p["vb_r"], grid.shape)
    tissue[body & canal] = T["csf"]
    tissue[body & disc] = T["disc"]
    bone = body & (sdf <= 0)
    tissue[bone] = T["cortical"]
    tissue[bone & (sdf <= -max(CORTICAL_MM, 0.7 * grid.voxel_mm))] = T["trabecular"]
    labels[bone] = LABELS["bone"]
    return tissue, labels


def _draw_trees(grid, trees, hu, tissue, labels, aerated, hu_table):
    """Blend vessels (blood), bronchial walls (soft tissue) and lumens (air) into the aerated lung."""
    v = grid.voxel_mm
    fractions = {}
    for name, segs, grow in (("vessel", trees["artery"], 0.0), ("vessel", trees["vein"], 0.0),
                             ("wall", trees["bronchus"], 1.0), ("lumen", trees["bronchus"], 0.0)):
        frac = fractions.setdefault(name, np.zeros(grid.shape, np.float32))
        if name != "vessel":
            segs = segs[np.maximum(segs[:, 6], segs[:, 7]) >= 1.2]
        for flat, dist, rad in tubes(grid, segs):
            np.maximum.at(frac.reshape(-1), flat, partial_volume(dist, rad + grow * (0.4 + 0.2 * rad), v))
    for name, value in (("vessel", hu_table["blood"]), ("wall", hu_table["soft"]), ("lumen", hu_table["airway"])):
        f = np.where(aerated, fractions[name], 0)
        hu += f * (value - hu)
        fractions[name] = f
    tissue[fractions["vessel"] > 0.1] = TISSUES["vessel"]
    tissue[fractions["wall"] > 0.5] = TISSUES["airway_wall"]
    lumen = fractions["lumen"] >= 0.5
    tissue[lumen], labels[lumen] = TISSUES["airway"], LABELS["airway"]


def _draw_lesion(grid, shape, lesion, n, hu, tissue, labels, lesion_id, lung_space, rng):
    """Render one lesion at its target mean HU (`lesions.paint_lesion`) and label its voxels."""
    painted = les.paint_lesion(grid, shape, lesion, hu, lung_space, rng)
    if painted is not None:
        box, mask = painted
        tissue[box][mask], labels[box][mask], lesion_id[box][mask] = TISSUES["lesion"], LABELS["lesion"], n
