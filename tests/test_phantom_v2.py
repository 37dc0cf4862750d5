"""Phantom v2: MAISI label ids, geometry, laterality, lobes, skeleton, tissue HU, resolution independence,
determinism, findings placement, noise spectrum."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medgen.findings import LOBES, Effusion, Emphysema, Findings, Lesion
from medgen.maisi_labels import (
    LABEL_DICT_FILE,
    MAISI_LABELS,
    MEDGEN_EFFUSION_ID,
    MEDGEN_EMPHYSEMA_ID,
    is_maisi_label_map,
    to_coarse,
)
from medgen.phantom.v2 import image, make_phantom_v2, measure, render_phantom_v2
from medgen.phantom.v2 import labels as v2_labels
from medgen.phantom.v2.geom import Grid, shell_fraction
from medgen.phantom.v2.labels import (
    DRAWN_NAMES,
    EFFUSION,
    EMPHYSEMA,
    LOBE_IDS,
    LUNG_IDS,
    TISSUES,
    TUMOR,
    label_id,
    rib_id,
    vertebra_id,
)
from medgen.volume import density_to_hu, make_affine

DICT = json.loads(LABEL_DICT_FILE.read_text())


def centroid(labels, ids):
    idx = np.argwhere(np.isin(labels.array, list(ids)))
    assert len(idx), f"no voxels labelled {ids}"
    return labels.world_coordinates(idx).mean(axis=0)


@pytest.fixture(scope="module")
def normal():
    return render_phantom_v2(Findings(), seed=0)


@pytest.fixture(scope="module")
def abnormal():
    findings = Findings(
        lesions=[Lesion("right_upper", 24.0, 0.9, "spiculated"), Lesion("left_lower", 20.0, 0.1, "lobulated"),
                 Lesion("right_middle", 14.0, 0.5, "smooth")],
        effusion=Effusion("left", "moderate"), emphysema=Emphysema("moderate", upper_predominant=True))
    return findings, render_phantom_v2(findings, seed=11)


def test_label_ids_come_from_the_maisi_dictionary_file(normal):
    for name in DRAWN_NAMES:
        assert DICT[name] == label_id(name), name
    assert (EFFUSION, EMPHYSEMA) == (MEDGEN_EFFUSION_ID, MEDGEN_EMPHYSEMA_ID)
    assert v2_labels.MAISI_LABELS is MAISI_LABELS  # one dictionary, read once
    assert EFFUSION not in DICT.values() and EMPHYSEMA not in DICT.values()
    assert LOBE_IDS == {"right_upper": DICT["right lung upper lobe"], "right_middle": DICT["right lung middle lobe"],
                        "right_lower": DICT["right lung lower lobe"], "left_upper": DICT["left lung upper lobe"],
                        "left_lower": DICT["left lung lower lobe"]}
    allowed = {0, EFFUSION, EMPHYSEMA} | {DICT[n] for n in DRAWN_NAMES}
    present = set(np.unique(normal.labels.array).tolist())
    assert present <= allowed
    assert is_maisi_label_map(normal.labels.array)
    to_coarse(normal.labels.array)  # maps to medgen's coarse table without error
    for name in ("heart", "aorta", "trachea", "airway", "liver", "stomach", "spleen", "sternum", "pulmonary vein",
                 "left scapula", "right clavicula", "costal cartilages", "spinal cord", "esophagus", "body"):
        assert DICT[name] in present, name


def test_geometry_dtypes_and_affine(normal):
    ct, labels = normal.ct, normal.labels
    assert ct.array.dtype == np.int16 and labels.array.dtype == np.uint8
    assert ct.shape == labels.shape == (64, 64, 64)
    np.testing.assert_allclose(ct.affine, make_affine(64, 5.0))
    np.testing.assert_allclose(labels.affine, make_affine(64, 5.0))
    assert ct.orientation == "RAS"
    json.dumps(normal.subject)
    ct2, lab2 = make_phantom_v2(None, shape=(24, 20, 16), spacing=(12.0, 14.0, 18.0), seed=2)
    assert ct2.shape == lab2.shape == (24, 20, 16)
    np.testing.assert_allclose(ct2.affine, make_affine((24, 20, 16), (12.0, 14.0, 18.0)))
    with pytest.raises(ValueError):
        make_phantom_v2(shape=4)
    with pytest.raises(ValueError):
        make_phantom_v2(seed=-1)


def test_laterality(normal):
    lab = normal.labels
    right = [LOBE_IDS[lb] for lb in LOBES if lb.startswith("right")]
    left = [LOBE_IDS[lb] for lb in LOBES if lb.startswith("left")]
    assert centroid(lab, right)[0] > 40 and centroid(lab, left)[0] < -40  # RAS+: the patient's right is +x
    assert centroid(lab, [label_id("liver")])[0] > 0
    assert centroid(lab, [label_id("spleen")])[0] < -40 and centroid(lab, [label_id("stomach")])[0] < 0
    heart = centroid(lab, [label_id("heart")])
    assert heart[0] < 0 and heart[1] > centroid(lab, [vertebra_id("T8")])[1]  # left and in front of the spine
    assert centroid(lab, [label_id("right kidney")])[0] > 0 > centroid(lab, [label_id("left kidney")])[0]
    for name, sign in (("right rib 6", 1), ("left rib 6", -1), ("right scapula", 1), ("left clavicula", -1)):
        assert np.sign(centroid(lab, [label_id(name)])[0]) == sign, name
    # the right dome is higher: the liver reaches higher than the stomach and spleen under the left dome
    z = lab.world_coordinates(np.argwhere(np.isin(lab.array, [label_id("liver")])))[:, 2].max()
    z_left = lab.world_coordinates(np.argwhere(np.isin(lab.array, [label_id("stomach"), label_id("spleen")])))[:, 2].max()
    assert z > z_left


def test_lobes_and_fissures(normal):
    lab = normal.labels
    v = measure.lung_volumes(lab)
    assert set(LOBE_IDS.values()) <= set(np.unique(lab.array).tolist())
    assert 1.0 < v["right_left_ratio"] < 1.35
    for lobe, (lo, hi) in {"right_upper": (0.12, 0.24), "right_middle": (0.06, 0.13), "right_lower": (0.21, 0.32),
                           "left_upper": (0.18, 0.28), "left_lower": (0.18, 0.29)}.items():
        assert lo < v["lobe_fraction"][lobe] < hi, lobe
    c = {lobe: centroid(lab, [LOBE_IDS[lobe]]) for lobe in LOBES}
    assert c["right_upper"][2] > c["right_lower"][2] and c["left_upper"][2] > c["left_lower"][2]
    assert c["right_middle"][1] > c["right_lower"][1] + 20  # the middle lobe lies in front
    # apices: lungs reach above the first ribs; recesses: lung lower posteriorly than anteriorly
    lung = np.isin(lab.array, LUNG_IDS)
    pts = lab.world_coordinates(np.argwhere(lung))
    rib1 = lab.world_coordinates(np.argwhere(lab.array == rib_id(1, 1)))
    assert pts[:, 2].max() > rib1[:, 2].min()
    back, front = pts[pts[:, 1] < np.percentile(pts[:, 1], 20)], pts[pts[:, 1] > np.percentile(pts[:, 1], 80)]
    assert back[:, 2].min() < front[:, 2].min() - 20


def test_lung_volume_matches_the_drawn_subject(normal):
    v = measure.lung_volumes(normal.labels)
    target = normal.subject["anatomy"]["lung_volume_l"]
    assert abs(v["total_l"] / target - 1) < 0.05


def test_skeleton_ids_and_order(normal):
    lab = normal.labels
    counts = measure.skeleton_counts(lab)
    assert counts["thoracic_vertebrae"] == 12 and counts["ribs_right"] == 12 and counts["ribs_left"] == 12
    zs = [centroid(lab, [vertebra_id(f"T{i}")])[2] for i in range(1, 13)]
    assert all(a > b for a, b in zip(zs, zs[1:], strict=False))
    assert centroid(lab, [label_id("sternum")])[1] > 40 > centroid(lab, [label_id("left scapula")])[1]
    assert centroid(lab, [label_id("right clavicula")])[2] > centroid(lab, [rib_id(1, 4)])[2]


def test_tissue_hu_within_published_ranges(normal):
    hu = measure.tissue_hu(normal.ct, normal.tissue)
    ranges = {"fat": (-120, -80), "muscle": (30, 60), "blood": (30, 60), "liver": (45, 70), "air": (-1010, -990)}
    for name, (lo, hi) in ranges.items():
        assert lo < hu[name] < hi, (name, hu[name])
    assert 160 < measure.trabecular_hu(normal.ct, normal.labels) < 400
    mld = measure.lung_density(normal.ct, normal.labels)
    assert -870 < mld["mean_hu"] < -820 and mld["laa950_percent"] < 7.4


def test_same_subject_at_two_spacings(normal):
    fine = render_phantom_v2(Findings(), shape=80, spacing=4.0, seed=0)
    v0, v1 = measure.lung_volumes(normal.labels), measure.lung_volumes(fine.labels)
    assert abs(v1["total_l"] / v0["total_l"] - 1) < 0.03
    for lobe in LOBES:
        assert abs(v1["lobe_fraction"][lobe] - v0["lobe_fraction"][lobe]) < 0.015, lobe
    for ids in ([label_id("heart")], [vertebra_id("T6")], [label_id("liver")]):
        np.testing.assert_allclose(centroid(fine.labels, ids), centroid(normal.labels, ids), atol=4.0)


def test_deterministic_by_seed():
    a = make_phantom_v2(None, shape=32, spacing=10.0, seed=5)
    b = make_phantom_v2(None, shape=32, spacing=10.0, seed=5)
    c = make_phantom_v2(None, shape=32, spacing=10.0, seed=6)
    assert np.array_equal(a[0].array, b[0].array) and np.array_equal(a[1].array, b[1].array)
    assert not np.array_equal(a[0].array, c[0].array)


def test_findings_placed_in_requested_lobe(abnormal):
    findings, case = abnormal
    plain = render_phantom_v2(Findings(), seed=11, noise=False)  # same anatomy without findings
    for n, lesion in enumerate(case.findings.lesions, start=1):
        ijk = np.round(np.linalg.solve(case.labels.affine, np.r_[lesion.center_mm, 1.0])[:3]).astype(int)
        assert plain.labels.array[tuple(ijk)] == LOBE_IDS[lesion.lobe], lesion.lobe
        mask = case.lesion_ids == n
        assert mask.any() and (case.labels.array[mask] == TUMOR).all()
        assert abs(case.ct.array[mask].mean() - density_to_hu(lesion.density)) < 1.0
    lab = case.labels
    fluid = lab.world_coordinates(np.argwhere(lab.array == EFFUSION))
    assert len(fluid) and (fluid[:, 0] < 0).all()  # left
    left_lung = centroid(plain.labels, [LOBE_IDS["left_upper"], LOBE_IDS["left_lower"]])
    assert fluid[:, 1].mean() < left_lung[1] - 20  # dependent (posterior, supine)
    emph = case.ct.array[lab.array == EMPHYSEMA]
    assert emph.size and -990 < np.median(emph) < -910  # low-attenuation lung (its vessels raise the mean)
    assert case.tissue[lab.array == EFFUSION].tolist().count(TISSUES["effusion"]) > 0.9 * (lab.array == EFFUSION).sum()


def test_trees_reach_segmental_and_beyond(normal):
    t = measure.tree_summary(normal.trees)
    assert (t["segmental_right"], t["segmental_left"]) == (10, 8)
    assert t["airway_generations"] >= 8 and t["artery_generations"] >= t["airway_generations"]
    assert t["vein_generations"] >= 6
    radii = {}
    for b in normal.trees["airway"]:
        radii.setdefault(b.generation, []).append(b.radius)
    assert np.mean(radii[1]) > np.mean(radii[3]) > np.mean(radii[6])  # tapering


def test_noise_has_a_ct_like_spectrum():
    rng = np.random.default_rng(0)
    n = image.ct_noise(rng, (64, 64, 16), (0.7, 0.7, 1.25), 20.0, 0.4)
    assert abs(n.std() - 20.0) < 0.5 and abs(n.mean()) < 0.5
    power = np.abs(np.fft.fft2(n, axes=(0, 1))) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(64, 0.7), np.fft.fftfreq(64, 0.7), indexing="ij"))
    low, mid = power[(f > 0) & (f < 0.05)].mean(), power[(f > 0.2) & (f < 0.35)].mean()
    assert low < 0.4 * mid  # ramp-shaped: not white
    assert image.noise_sigma((5, 5, 5), 15, 0.4) < image.noise_sigma((1.25, 1.25, 1.25), 15, 0.4)


def test_partial_volume_helpers():
    g = Grid((4, 4, 4), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    fine = image.supersampled(g, 2)
    np.testing.assert_allclose(image.block_mean(np.broadcast_to(fine.coords()[0], fine.shape), 2)[:, 0, 0], g.axis(0))
    labels = np.zeros(fine.shape, np.uint8)
    labels[:3] = 7
    assert image.block_mode(labels, 2)[0, 0, 0] == 7 and image.block_mode(labels, 2)[1, 0, 0] == 7
    # a 1.5 mm cortex keeps its volume whatever the sample size and the samples' offset from the surface
    for step in (0.3125, 1.25, 2.5, 5.0):
        for offset in (0.0, 0.3, 0.7):
            depth = np.arange(-40, 1e-9, step) + offset * step
            depth = depth[depth <= 0]
            assert abs(shell_fraction(depth, 1.5, step).sum() * step - 1.5) < 1e-3


def test_cli_writes_a_version_2_phantom(tmp_path):
    import nibabel as nib

    from medgen.cli.main import main

    image = tmp_path / "ph.nii.gz"
    args = ["data", "phantom", "--out", str(image), "--seed", "4", "--shape", "32", "--spacing", "10", "--version", "2"]
    assert main(args) == 0
    labels = np.asarray(nib.load(tmp_path / "ph_label.nii.gz").dataobj)
    assert labels.shape == (32, 32, 32) and is_maisi_label_map(labels)
    assert set(LOBE_IDS.values()) <= set(np.unique(labels).tolist())
    assert (tmp_path / "ph.txt").read_text().strip() and (tmp_path / "ph.png").exists()
