"""MAISI renderer, CPU only, no network: label mapping, grids, candidate choice, anatomy, placement, composition,
folder loading and the sampler on the stand-in folder (`medgen.render.maisi.standin`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen import maisi_labels as ml
from medgen.errors import MedgenError, ModelNotFoundError
from medgen.findings import LABELS, Effusion, Emphysema, Findings, Lesion
from medgen.render.maisi import MaisiBundle, MaisiGridError, check_maisi_grid, compose
from medgen.render.maisi import anatomy as an
from medgen.volume import Volume, density_to_hu, make_affine


@pytest.fixture(scope="session")
def standin(tmp_path_factory):
    """The stand-in MAISI folder, written once per test session (shared by the test_maisi*.py files)."""
    from medgen.render.maisi import write_standin
    from medgen.render.maisi.renderer import STANDIN_MARKER

    root = tmp_path_factory.getbasetemp() / "maisi-standin"
    return root if (root / STANDIN_MARKER).is_file() else write_standin(root)


def test_maisi_labels_match_dictionary_file():
    data = json.loads(ml.LABEL_DICT_FILE.read_text(encoding="utf-8"))
    assert ml.MAISI_LABELS == data and len(data) == 133
    assert (data["lung tumor"], data["body"], data["right lung lower lobe"], data["left lung upper lobe"]) == (23, 200, 32, 28)
    assert {ml.MEDGEN_EFFUSION_ID, ml.MEDGEN_EMPHYSEMA_ID}.isdisjoint(data.values())
    assert min(ml.MEDGEN_EFFUSION_ID, ml.MEDGEN_EMPHYSEMA_ID) > max(data.values()) and ml.MEDGEN_EMPHYSEMA_ID < 256
    for lobe, name in ml.MAISI_LOBES.items():  # every lobe by its dictionary name
        assert ml.to_coarse(np.array([data[name]]))[0] == LABELS[lobe]
    ids = np.array([0, data["body"], data["lung tumor"], data["trachea"], data["heart"], data["vertebrae T6"],
                    data["left rib 3"], data["liver"], ml.MEDGEN_EFFUSION_ID, ml.MEDGEN_EMPHYSEMA_ID])
    assert ml.to_coarse(ids).tolist() == [0, 1, 20, 10, 11, 2, 2, 1, 9, 12]
    assert set(ml.MAISI_TO_COARSE) == {0, *data.values(), ml.MEDGEN_EFFUSION_ID, ml.MEDGEN_EMPHYSEMA_ID}
    with pytest.raises(ValueError, match="no mapping"):
        ml.to_coarse(np.array([150]))
    coarse = np.array([0, 1, 3, 4, 5, 6, 7, 9, 10, 12, 20, 21])
    assert ml.from_coarse(coarse).tolist() == [0, 200, 30, 31, 32, 28, 29, 210, 132, 211, 23, 23]
    assert (ml.to_coarse(ml.from_coarse(coarse[:-1])) == coarse[:-1]).all()  # round trip (lesions merge)
    with pytest.raises(ValueError, match="no single MAISI id"):
        ml.from_coarse(np.array([2]))
    assert ml.from_coarse(np.array([2, 11]), fallback={"bone": 44, "mediastinum": 115}).tolist() == [44, 115]


def test_maisi_grid_rules():
    assert check_maisi_grid((512, 512, 256), (0.75, 0.75, 1.25)) == ((512, 512, 256), (0.75, 0.75, 1.25))
    assert check_maisi_grid([256, 256, 128], 1.5)[1] == (1.5, 1.5, 1.5)
    for shape, spacing, words in [((512, 384, 256), 1.0, "not a MAISI grid"), ((200, 200, 128), 1.5, "not a MAISI grid"),
                                  ((512, 512, 100), 1.0, "not a MAISI grid"), ((512, 512, 256), (0.7, 0.8, 1.0), "spacing"),
                                  ((512, 512, 256), (0.4, 0.4, 1.0), "spacing"), ((512, 512, 256), (1, 1, 6), "spacing"),
                                  ((256, 256, 128), 0.9, "field of view")]:
        with pytest.raises(MaisiGridError, match=words) as err:
            check_maisi_grid(shape, spacing)
        assert "\n" not in str(err.value)


def _entry(name, dim, spacing, labels=(28, 29, 30, 31, 32, 200), top=1, bottom=2):
    eye = np.eye(4, dtype=int)
    return {"pseudo_label_filename": name, "dim": list(dim), "spacing": list(spacing), "label_list": list(labels),
            "top_region_index": eye[top].tolist(), "bottom_region_index": eye[bottom].tolist()}


def test_maisi_candidate_choice():
    entries = [_entry("a", (512, 512, 256), (0.75, 0.75, 1.25)), _entry("b", (512, 512, 256), (0.75, 0.75, 1.25)),
               _entry("tumour", (512, 512, 256), (0.75, 0.75, 1.25), labels=(23, 28, 29, 30, 31, 32)),
               _entry("no-lobe", (512, 512, 256), (0.75, 0.75, 1.25), labels=(28, 29, 30, 31)),
               _entry("abdomen", (512, 512, 256), (0.75, 0.75, 1.25), top=2, bottom=3),
               _entry("near", (512, 512, 320), (0.8, 0.8, 1.0)), _entry("far", (384, 384, 200), (1.5, 1.5, 2.0)),
               _entry("small", (256, 256, 256), (1.5, 1.5, 1.25))]
    picks = {an.choose_candidate(entries, (512, 512, 256), (0.75, 0.75, 1.25), s)["pseudo_label_filename"]
             for s in range(20)}
    assert picks == {"a", "b"}  # exact matches only; tumour, missing lobe, abdomen-only are filtered out
    assert an.choose_candidate(entries, (512, 512, 256), (0.75, 0.75, 1.25), 3) == \
        an.choose_candidate(entries, (512, 512, 256), (0.75, 0.75, 1.25), 3)
    ranked = an.rank_candidates(entries, (512, 512, 256), (0.8, 0.8, 1.0))  # no exact match: nearest FOV first
    assert [e["pseudo_label_filename"] for e, _ in ranked] == ["near", "a", "b"] and ranked[0][1] > 0
    ranked = an.rank_candidates(entries, (512, 512, 384), (0.8, 0.8, 0.8))  # z 256 <= 384 - 128: not upsampled
    assert [e["pseudo_label_filename"] for e, _ in ranked] == ["near"]
    with pytest.raises(an.AnatomyError, match="no candidate mask"):
        an.choose_candidate(entries[2:5], (512, 512, 256), (0.75, 0.75, 1.25), 0)


def test_maisi_resample_and_body_synthesis(tmp_path):
    from medgen.io.nifti import save_nifti

    labels = np.zeros((40, 40, 20), np.uint8)
    labels[10:18, 12:28, 4:16] = 30  # right upper lobe block (x < 20 is the right side here: it does not matter)
    labels[22:30, 12:28, 4:16] = 28
    labels[18:22, 14:26, 4:16] = 115
    vol = Volume(labels, make_affine(labels.shape, 4.0), {})
    out = an.resample_labels(vol, (80, 80, 40), (2.0, 2.0, 2.0))
    assert out.shape == (80, 80, 40) and set(np.unique(out)) == {0, 28, 30, 115}
    assert abs(np.sum(out == 30) * 8 - np.sum(labels == 30) * 64) / (np.sum(labels == 30) * 64) < 0.05
    assert np.argwhere(out == 115).mean(axis=0) == pytest.approx([39.5, 39.5, 19.5], abs=1.0)  # centre kept
    body = an.add_body(labels, (4.0, 4.0, 4.0), margin_mm=8.0)
    assert (body[labels > 0] == labels[labels > 0]).all()  # organs untouched
    added = (body == 200)
    assert added.any() and added[:, :, 4:16].sum() > 0 and not added[:, :, :2].any()
    assert added[18:22, 12:14, 10].all()  # the gap between the organs is inside the hull
    assert added[8:10, 20, 10].all() and not added[:8, 20, 10].any()  # grown by 8 mm = 2 voxels
    seg = tmp_path / "seg.nii.gz"
    full = np.zeros((64, 64, 32), np.uint8)
    for i, lobe in enumerate((30, 31, 32, 28, 29)):
        full[8 + 10 * i: 16 + 10 * i, 16:48, 8:24] = lobe
    save_nifti(Volume(full, make_affine(full.shape, 6.0), {}), seg, dtype=np.uint8)
    out, info = an.user_anatomy(seg, (256, 256, 128), (1.5, 1.5, 3.0))
    assert info["body_synthesised"] and (out == 200).any() and all((out == i).any() for i in (28, 29, 30, 31, 32))
    ts = tmp_path / "ts.nii.gz"  # TotalSegmentator v2 ids: 10-14 lobes, 16 trachea
    ts_full = np.zeros_like(full)
    for maisi, tsid in {28: 10, 29: 11, 30: 12, 31: 13, 32: 14}.items():
        ts_full[full == maisi] = tsid
    ts_full[30:34, 30:34, 24:30] = 16
    save_nifti(Volume(ts_full, make_affine(full.shape, 6.0), {}), ts, dtype=np.uint8)
    out_ts, _ = an.user_anatomy(ts, (256, 256, 128), (1.5, 1.5, 3.0), ids="totalseg")
    assert (out_ts == 57).any() and (out_ts[out == 30] == 30).all()
    assert len(an.TOTALSEG_TO_MAISI) == 117 and an.TOTALSEG_TO_MAISI[92] == ml.MAISI_LABELS["left rib 1"]
    with pytest.raises(MedgenError, match="not MAISI ids"):
        an.user_anatomy(_with_value(tmp_path, full, 150), (256, 256, 128), (1.5, 1.5, 3.0))


def _with_value(tmp_path, array, value):
    from medgen.io.nifti import save_nifti

    bad = array.copy()
    bad[0, 0, 0] = value
    path = tmp_path / "bad.nii.gz"
    save_nifti(Volume(bad, make_affine(bad.shape, 6.0), {}), path, dtype=np.uint8)
    return path


def test_maisi_lobe_placement_in_candidate_anatomy(standin):
    from medgen.render.maisi.placement import place_findings

    bundle = MaisiBundle.open(standin)
    base, info = an.candidate_anatomy(bundle, (256, 256, 128), (1.5, 1.5, 2.5), seed=0)
    assert info["mask"] == "standin_chest_0.nii.gz" and base.shape == (256, 256, 128)
    findings = Findings(lesions=[Lesion("right_lower", 30.0, 0.95), Lesion("left_upper", 12.0, 0.15)],
                        effusion=Effusion("left", "small"), emphysema=Emphysema("moderate", upper_predominant=True))
    affine = make_affine(base.shape, (1.5, 1.5, 2.5))
    layout = place_findings(base, affine, findings, seed=0, info=info)
    labels, coarse = np.asarray(layout.labels.array), np.asarray(layout.coarse.array)
    voxel_ml = 1.5 * 1.5 * 2.5 / 1000
    mass, nodule = coarse == 20, coarse == 21
    assert (labels[mass] == 23).all() and (base[mass] == 32).all()  # inside the real right lower lobe
    diameter = (6 * mass.sum() * voxel_ml * 1000 / np.pi) ** (1 / 3)
    assert diameter == pytest.approx(30.0, rel=0.2)
    assert (labels[nodule] == 23).all() and (base[nodule] == 28).mean() > 0.9
    fluid = labels == ml.MEDGEN_EFFUSION_ID
    x_mm = np.argwhere(fluid)[:, 0] * 1.5 + affine[0, 3]
    assert fluid.any() and (x_mm < 0).all() and np.isin(base[fluid], [28, 29]).all()  # left side (RAS: x < 0)
    emph = labels == ml.MEDGEN_EMPHYSEMA_ID
    lungs = np.isin(base, [28, 29, 30, 31, 32])
    assert np.isin(base[emph], [28, 29, 30, 31, 32]).all() and 0.3 < emph.sum() / lungs.sum() < 0.55
    assert layout.findings.lesions[0].center_mm is not None and layout.label_table()["lesion_lung_tumor"] == 23
    huge = Findings(lesions=[Lesion("right_middle", 150.0, 0.9)])
    with pytest.raises(an.AnatomyError, match="larger than"):
        place_findings(base, affine, huge, seed=0)


def test_maisi_density_calibration():
    rng = np.random.default_rng(0)
    hu = rng.normal(-850, 30, (40, 40, 40)).astype(np.float32)
    comp = np.zeros(hu.shape, np.int32)
    zz, yy, xx = np.mgrid[:40, :40, :40]
    for n, cx in enumerate((8, 20, 32), start=1):
        comp[(xx - cx) ** 2 + (yy - 20) ** 2 + (zz - 20) ** 2 <= 25] = n
    hu[comp > 0] += rng.normal(800, 150, int((comp > 0).sum()))  # MAISI's own tumour, noisy
    out = compose.calibrate_lesions(hu, comp, [0.15, 0.5, 0.95], (1.0, 1.0, 1.0))
    for n, d in enumerate((0.15, 0.5, 0.95), start=1):
        assert hu[comp == n].mean() == pytest.approx(density_to_hu(d), abs=0.5)
        assert out[n - 1]["calibrated_mean_hu"] == pytest.approx(density_to_hu(d), abs=0.5)
    assert hu[comp == 1].std() <= compose.TEXTURE_STD_HU + 1  # texture capped
    core = (comp == 2) & ((xx - 20) ** 2 + (yy - 20) ** 2 + (zz - 20) ** 2 <= 2)
    assert hu[core].mean() > hu[comp == 2].mean() + 200  # part-solid: solid core in a ground-glass halo


def test_maisi_effusion_emphysema_painting_and_quality_check():
    rng = np.random.default_rng(1)
    hu = rng.normal(40, 12, (30, 30, 30)).astype(np.float32)
    fluid = np.zeros(hu.shape, bool)
    fluid[5:25, 5:25, 5:15] = True
    hu[fluid] = -600.0
    info = compose.paint_effusion(hu, fluid, ~fluid, (1.0, 1.0, 1.0), seed=0)
    core = np.zeros(hu.shape, bool)
    core[8:22, 8:22, 8:12] = True
    assert hu[core].mean() == pytest.approx(compose.EFFUSION_HU, abs=3)
    assert info["image_noise_hu"] == pytest.approx(hu[core].std(), rel=0.35)  # noise matched to the surroundings
    lung = np.ones((20, 20, 20), bool)
    lhu = rng.normal(-860, 40, lung.shape).astype(np.float32)
    lhu[0, :, :] = 40.0  # a vessel row: kept
    region = np.zeros(lung.shape, bool)
    region[:10] = True
    emph = compose.paint_emphysema(lhu, region, lung)
    assert emph["lung_below_950_after"] > emph["lung_below_950_before"] + 0.15 and (lhu[0] == 40.0).all()
    stats = {"lung": {"sigma_6_low": -1088, "sigma_6_high": -551, "percentile_0_5": -937, "percentile_99_5": -367},
             "liver": {"sigma_6_low": -21, "sigma_6_high": 156, "percentile_0_5": 9, "percentile_99_5": 162}}
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:5], labels[5:] = 30, 1
    img = np.where(labels == 30, -850.0, 400.0)
    check = compose.quality_check(img, labels, stats)
    assert check["lung"]["ok"] and not check["liver"]["ok"] and check["liver"]["high"] == 162


def test_maisi_folder_checks_and_weights_only(standin, tmp_path):
    import shutil

    from medgen.render.maisi.bundle import MaisiConfigError
    from medgen.render.maisi.networks import MaisiWeightsError, read_checkpoint

    bundle = MaisiBundle.open(standin)
    assert bundle.version == "rflow-ct" and bundle.num_inference_steps == 30
    assert "stand-in" in bundle.license["name"] and len(bundle.license["sha256"]) == 64
    spec = bundle.network_def("diffusion_unet_def", "cpu")
    assert spec["in_channels"] == 4 and spec["use_flash_attention"] is False
    assert bundle.network_def("diffusion_unet_def", "cuda")["use_flash_attention"] is True
    with pytest.raises(ModelNotFoundError, match="no MAISI folder .*medgen models fetch maisi"):
        MaisiBundle.open(tmp_path / "nowhere")
    copy = tmp_path / "copy"
    shutil.copytree(standin, copy, ignore=shutil.ignore_patterns("datasets"))
    (copy / "models/controlnet_3d_rflow-ct.pt").unlink()
    with pytest.raises(ModelNotFoundError, match="lacks models/controlnet_3d_rflow-ct.pt"):
        MaisiBundle.open(copy)

    import argparse  # any class outside torch's weights_only allowlist: reading it would run pickled code

    torch.save({"controlnet_state_dict": {}, "x": argparse.Namespace(a=1)}, copy / "models/controlnet_3d_rflow-ct.pt")
    with pytest.raises(MaisiWeightsError, match="weights_only=True"):
        read_checkpoint(copy / "models/controlnet_3d_rflow-ct.pt")
    network = json.loads((copy / "configs/config_network_rflow.json").read_text())
    network["autoencoder_def"]["num_channels"] = "$__import__('os').getcwd()"
    (copy / "configs/config_network_rflow.json").write_text(json.dumps(network))
    with pytest.raises(MaisiConfigError, match="code"):
        MaisiBundle.open(copy).network_def("autoencoder_def")
    network["autoencoder_def"] = {"_target_": "os.system", "command": "true"}
    (copy / "configs/config_network_rflow.json").write_text(json.dumps(network))
    from medgen.render.maisi.bundle import instantiate

    with pytest.raises(MaisiConfigError, match="not one of MAISI"):
        instantiate(MaisiBundle.open(copy).network_def("autoencoder_def"))
    label_dict = json.loads((copy / "configs/label_dict.json").read_text())
    label_dict["lung tumor"] = 99
    (copy / "configs/label_dict.json").write_text(json.dumps(label_dict))
    with pytest.raises(MaisiConfigError, match="lung tumor"):
        MaisiBundle.open(copy)


def test_maisi_sampler_and_tiled_decode(standin):
    from medgen.render.maisi.networks import load_networks
    from medgen.render.maisi.renderer import condition_labels
    from medgen.render.maisi.sampler import binarize_labels, decode_latent, region_index, sample_latent

    bits = binarize_labels(torch.tensor([0, 1, 23, 200, 211]).view(1, 1, 5, 1, 1))
    assert bits.shape == (1, 8, 5, 1, 1) and bits[0, :, 3, 0, 0].tolist() == [0, 0, 0, 1, 0, 0, 1, 1]
    assert (bits[0, :, :, 0, 0].T.long() * (2 ** torch.arange(8))).sum(1).tolist() == [0, 1, 23, 200, 211]
    assert region_index(np.array([28, 1])) == ([0, 1, 0, 0], [0, 0, 1, 0])
    labels = np.full((64, 64, 64), 200, np.uint8)  # latent 16^3: the UNet's deepest level is 2^3
    labels[8:28, 16:48, 4:60], labels[36:56, 16:48, 4:60] = 32, 211
    labels[40:48, 20:28, 8:16] = 210
    cond = condition_labels(labels)
    assert set(np.unique(cond)) == {32, 200} and (cond[labels == 211] == 32).all()
    nets = load_networks(MaisiBundle.open(standin), "cpu")
    assert len(nets.sha256) == 3 and all(len(v) == 64 for v in nets.sha256.values())
    lat = sample_latent(nets, cond, (1.5, 1.5, 2.5), steps=2, seed=3)
    assert lat.shape == (1, 4, 16, 16, 16) and torch.equal(lat, sample_latent(nets, cond, (1.5, 1.5, 2.5), steps=2, seed=3))
    assert not torch.equal(lat, sample_latent(nets, cond, (1.5, 1.5, 2.5), steps=1, seed=4))
    whole = decode_latent(nets, lat, roi=(16, 16, 16))
    tiled = decode_latent(nets, lat, roi=(8, 8, 16), overlap=0.25)  # 3 x 3 x 1 overlapping windows
    assert whole.shape == tiled.shape == (64, 64, 64) and whole.min() >= -1000 and whole.max() <= 1000
    assert np.abs(whole - tiled).mean() < 300  # same latent, windows blended: the same image up to seams
