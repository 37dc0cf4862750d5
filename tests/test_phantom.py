"""Procedural chest-CT phantom: tissue HU, laterality, findings ground truth, determinism, resolution independence."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from scipy.ndimage import binary_dilation
from scipy.ndimage import label as connected

from medgen.findings import LABELS, LOBE_LABELS, LOBES, Effusion, Emphysema, Findings, Lesion
from medgen.phantom.chest import TISSUES, make_phantom, make_phantom_with_tissues, sample_findings
from medgen.volume import density_to_hu, make_affine

LOBE_VALUES = list(LOBE_LABELS.values())
SIDE_VALUES = {side: [LOBE_LABELS[lobe] for lobe in LOBES if lobe.startswith(side)] for side in ("right", "left")}
# target HU range of each tissue (mean HU over the tissue), the convention the phantom's ranges must stay inside
DESIGN_HU = {"air": (-1010, -990), "fat": (-120, -80), "muscle": (30, 60), "blood": (30, 60), "lung": (-870, -820),
             "trabecular": (200, 400), "cortical": (700, 1200), "effusion": (0, 20), "emphysema": (-950, -910)}


def world_of(volume, mask):
    return volume.world_coordinates(np.argwhere(mask))


def lesion_component(case, lesion):
    """Mask of the connected lesion-label component that contains the lesion's centre voxel."""
    ijk = np.round(np.linalg.solve(case.image.affine, np.r_[lesion.center_mm, 1.0])[:3]).astype(int)
    components, _ = connected(case.labels.array == LABELS["lesion"])
    assert components[tuple(ijk)] > 0, f"centre of {lesion} is not labelled lesion"
    return components == components[tuple(ijk)]


@pytest.fixture(scope="module")
def abnormal():
    findings = Findings(
        lesions=[Lesion("right_upper", 30.0, 0.9, "spiculated"), Lesion("left_lower", 24.0, 0.1, "lobulated"),
                 Lesion("right_middle", 16.0, 0.5, "smooth")],
        effusion=Effusion("left", "moderate"), emphysema=Emphysema("moderate", upper_predominant=True))
    return findings, make_phantom_with_tissues(findings, seed=7)


def test_geometry_and_dtypes(abnormal):
    _, (case, _) = abnormal
    assert case.image.array.dtype == np.int16 and case.labels.array.dtype == np.uint8
    assert case.image.shape == case.labels.shape == (64, 64, 64)
    np.testing.assert_allclose(case.image.affine, make_affine(64, 5.0))
    np.testing.assert_allclose(case.labels.affine, make_affine(64, 5.0))
    assert case.image.orientation == "RAS"
    assert set(np.unique(case.labels.array)) <= set(LABELS.values())
    json.dumps(case.subject)  # json-serialisable
    json.dumps(case.findings.to_dict())


@pytest.mark.parametrize("seed", [0, 1])
def test_tissue_hu_within_design_ranges(seed):
    findings = Findings(effusion=Effusion("bilateral", "moderate"), emphysema=Emphysema("mild"))
    case, tissue = make_phantom_with_tissues(findings, seed=seed)
    image = case.image.array.astype(float)
    for name, (lo, hi) in DESIGN_HU.items():
        mask = tissue == TISSUES[name]
        assert mask.sum() > 20, name
        assert lo <= image[mask].mean() <= hi, (name, image[mask].mean())
    air = case.labels.array == LABELS["background"]
    assert -1010 <= image[air].mean() <= -990
    noise = image[tissue == TISSUES["muscle"]].std()
    assert 8 <= noise <= 22, noise  # correlated noise, ~10-20 HU in soft tissue


def test_laterality_and_orientation(abnormal):
    _, (case, _) = abnormal
    labels = case.labels.array
    right, left = (world_of(case.labels, np.isin(labels, SIDE_VALUES[s])) for s in ("right", "left"))
    assert right[:, 0].mean() > 30 and (right[:, 0] > 0).mean() > 0.99  # RAS+: patient's right at +x
    assert left[:, 0].mean() < -30 and (left[:, 0] < 0).mean() > 0.99
    lung_z = np.concatenate([right, left])[:, 2]
    heart = world_of(case.labels, labels == LABELS["mediastinum"])
    bone = world_of(case.labels, labels == LABELS["bone"])
    spine = bone[np.abs(bone[:, 0]) < 15]
    assert heart[:, 1].mean() > spine[:, 1].mean() + 30  # heart anterior (+y), spine posterior
    # apices superior: the top of the lungs is far above the diaphragm and above the heart
    assert lung_z.max() > 80 and lung_z.min() < -60
    # trachea (airway label) runs down the midline from the top of the volume
    airway = world_of(case.labels, labels == LABELS["airway"])
    top = airway[airway[:, 2] > lung_z.max()]
    assert len(top) and abs(top[:, 0].mean()) < 15


@pytest.mark.parametrize("lobe", LOBES)
def test_lesion_in_requested_lobe_and_zone(lobe):
    lesion = Lesion(lobe, 20.0, 0.95, "smooth")
    case = make_phantom(Findings([lesion]), seed=3)
    placed = case.findings.lesions[0]
    assert placed.center_mm is not None and lesion.center_mm is None  # input left untouched
    mask = lesion_component(case, placed)
    ring = case.labels.array[binary_dilation(mask, iterations=2) & ~mask]
    ring = ring[np.isin(ring, LOBE_VALUES)]
    assert Counter(ring.tolist()).most_common(1)[0][0] == LOBE_LABELS[lobe]
    z = world_of(case.labels, np.isin(case.labels.array, SIDE_VALUES[placed.side]))[:, 2]
    mid = (z.min() + z.max()) / 2
    if placed.zone == "upper":
        assert placed.center_mm[2] > mid
    elif placed.zone == "lower":
        assert placed.center_mm[2] < mid
    assert (placed.center_mm[0] > 0) == (placed.side == "right")


def test_lesion_size_and_mean_hu(abnormal):
    findings, (case, _) = abnormal
    image = case.image.array.astype(float)
    for lesion in case.findings.lesions:
        mask = lesion_component(case, lesion)
        assert abs(image[mask].mean() - density_to_hu(lesion.density)) <= 30
        if lesion.diameter_mm >= 20:
            measured = (6 * mask.sum() * 125.0 / np.pi) ** (1 / 3)
            assert abs(measured - lesion.diameter_mm) <= max(0.15 * lesion.diameter_mm, 5.0), (lesion, measured)


@pytest.mark.parametrize("density", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_lesion_mean_hu_over_density_range(density):
    case = make_phantom(Findings([Lesion("left_upper", 12.0, density, "lobulated")]), seed=11)
    mask = case.labels.array == LABELS["lesion"]
    assert mask.sum() >= 3
    assert abs(case.image.array[mask].mean() - density_to_hu(density)) <= 30


def test_effusion_side_posterior_and_grade():
    volumes = {}
    for grade in ("small", "moderate", "large"):
        case = make_phantom(Findings(effusion=Effusion("right", grade)), seed=5)
        fluid = case.labels.array == LABELS["effusion"]
        xyz = world_of(case.labels, fluid)
        assert (xyz[:, 0] > 0).all()  # right side only
        lung = world_of(case.labels, np.isin(case.labels.array, SIDE_VALUES["right"]))
        assert xyz[:, 1].mean() < lung[:, 1].mean()  # dependent: posterior
        volumes[grade] = fluid.sum()
    assert 0 < volumes["small"] < volumes["moderate"] < volumes["large"]
    both = make_phantom(Findings(effusion=Effusion("bilateral", "moderate")), seed=5)
    x = world_of(both.labels, both.labels.array == LABELS["effusion"])[:, 0]
    assert (x > 0).sum() > 20 and (x < 0).sum() > 20


def test_emphysema_low_attenuation_increases_with_grade():
    percent = {}
    for grade in (None, "mild", "moderate", "severe"):
        findings = Findings(emphysema=Emphysema(grade) if grade else None)
        case = make_phantom(findings, seed=2)
        lung = np.isin(case.labels.array, LOBE_VALUES)
        percent[grade] = 100 * (case.image.array[lung] < -950).mean()
    assert percent[None] < 1
    assert 5 <= percent["mild"] <= 10 and 15 <= percent["moderate"] <= 25 and 30 <= percent["severe"] <= 45, percent


def test_emphysema_upper_predominance(abnormal):
    _, (case, _) = abnormal
    lung = np.isin(case.labels.array, LOBE_VALUES)
    z = world_of(case.labels, lung)[:, 2]
    low = case.image.array[lung] < -950
    mid = (z.min() + z.max()) / 2
    assert low[z > mid].mean() > 1.5 * low[z < mid].mean()


def test_determinism_and_seed_variation():
    a, b = make_phantom(seed=4), make_phantom(seed=4)
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    assert a.findings == b.findings and a.subject == b.subject
    c = make_phantom(seed=5)
    assert not np.array_equal(a.image.array, c.image.array)
    assert a.subject["anatomy"] != c.subject["anatomy"]


def test_same_subject_with_and_without_findings():
    normal = make_phantom(Findings(), seed=9)
    sick = make_phantom(Findings([Lesion("left_upper", 15.0, 1.0)]), seed=9)
    assert normal.subject["anatomy"] == sick.subject["anatomy"]
    assert not (normal.labels.array == LABELS["lesion"]).any()
    changed = normal.labels.array != sick.labels.array
    assert 0 < changed.sum() < 200 and (sick.labels.array[changed] == LABELS["lesion"]).all()


def test_resolution_independence():
    findings = Findings([Lesion("right_lower", 30.0, 0.9, "smooth")], effusion=Effusion("left", "small"))
    coarse = make_phantom(findings, seed=21)
    fine = make_phantom(findings, shape=96, spacing=320 / 96, seed=21)
    assert coarse.subject["anatomy"] == fine.subject["anatomy"]
    assert coarse.findings.lesions[0].center_mm == fine.findings.lesions[0].center_mm
    for name in ("right_upper", "left_lower", "bone", "mediastinum", "effusion"):
        v_coarse = (coarse.labels.array == LABELS[name]).sum() * 5.0**3
        v_fine = (fine.labels.array == LABELS[name]).sum() * (320 / 96) ** 3
        assert abs(v_fine - v_coarse) <= 0.12 * v_coarse, name
    for case, voxel in ((coarse, 5.0), (fine, 320 / 96)):
        mask = lesion_component(case, case.findings.lesions[0])
        assert abs((6 * mask.sum() * voxel**3 / np.pi) ** (1 / 3) - 30.0) <= 4.5


def test_sample_findings_distribution():
    rng = np.random.default_rng(0)
    draws = [sample_findings(rng) for _ in range(400)]
    normal = sum(f.is_normal for f in draws) / len(draws)
    assert 0.15 < normal < 0.35
    lesions = [lesion for f in draws for lesion in f.lesions]
    assert all(8 <= lesion.diameter_mm <= 50 and 0 <= lesion.density <= 1 for lesion in lesions)
    assert max(len(f.lesions) for f in draws) == 3
    assert {lesion.lobe for lesion in lesions} == set(LOBES)
    assert any(f.effusion for f in draws) and any(f.emphysema for f in draws)
    assert all(not f.is_normal for f in (sample_findings(rng, p_normal=0.0) for _ in range(50)))
    assert all(f.is_normal for f in (sample_findings(rng, p_normal=1.0) for _ in range(5)))


def test_sampled_findings_from_seed_and_anisotropic_grid():
    case = make_phantom(shape=(48, 40, 56), spacing=(6.0, 7.0, 5.5), seed=12)
    assert case.image.shape == (48, 40, 56)
    np.testing.assert_allclose(case.image.spacing, (6.0, 7.0, 5.5))
    assert case.findings == make_phantom(seed=12).findings  # findings depend on the seed, not the grid
    assert all(lesion.center_mm is not None for lesion in case.findings.lesions)


@pytest.mark.parametrize("kwargs, word", [({"shape": 4}, "shape"), ({"shape": (64, 64)}, "shape"),
                                          ({"spacing": -1.0}, "spacing"), ({"seed": -3}, "seed")])
def test_invalid_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_phantom(Findings(), **kwargs)
