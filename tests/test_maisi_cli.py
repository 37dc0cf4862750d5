"""`medgen generate --renderer maisi` end to end on the stand-in MAISI folder (CPU, 256 x 256 x 128, one step),
refusals before any weights load, and `medgen models fetch maisi` without a network."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medgen.cli.main import main

REPORT = "A 30 mm solid mass in the right lower lobe. Small left pleural effusion."
GRID = ["--shape", "256", "256", "128", "--spacing", "1.5", "1.5", "2.5"]


@pytest.fixture(scope="session")
def standin(tmp_path_factory):
    """The stand-in MAISI folder, written once per test session (shared by the test_maisi*.py files)."""
    from medgen.render.maisi import write_standin
    from medgen.render.maisi.renderer import STANDIN_MARKER

    root = tmp_path_factory.getbasetemp() / "maisi-standin"
    return root if (root / STANDIN_MARKER).is_file() else write_standin(root)


@pytest.fixture(scope="module")
def generated(standin, tmp_path_factory):
    out = tmp_path_factory.mktemp("maisi-out") / "ct.nii.gz"
    capture = pytest.MonkeyPatch()
    import io

    err = io.StringIO()
    capture.setattr(sys, "stderr", err)
    try:
        rc = main(["generate", "--renderer", "maisi", "--maisi", str(standin), "--report", REPORT, *GRID,
                   "--steps", "1", "--out", str(out)])
    finally:
        capture.undo()
    return rc, out, err.getvalue()


def test_maisi_cli_writes_ct_labels_findings(generated):
    rc, out, _ = generated
    assert rc == 0
    stem = out.with_name("ct")
    for suffix in (".nii.gz", "_labels.nii.gz", "_findings.json", ".json", ".png"):
        assert Path(f"{stem}{suffix}").is_file(), suffix
    ct = nib.load(out)
    assert ct.get_data_dtype() == np.int16 and ct.shape == (256, 256, 128)
    assert ct.header["descrip"].tobytes().startswith(b"SYNTHETIC")
    assert int(ct.header["sform_code"]) > 0 and int(ct.header["qform_code"]) > 0
    expected = np.diag([1.5, 1.5, 2.5, 1.0])
    expected[:3, 3] = -(np.array([256, 256, 128]) - 1) / 2 * np.array([1.5, 1.5, 2.5])
    assert np.allclose(ct.affine, expected) and nib.aff2axcodes(ct.affine) == ("R", "A", "S")
    hu = np.asarray(ct.dataobj)
    assert hu.min() >= -1024 and hu.max() <= 3071
    labels = nib.load(f"{stem}_labels.nii.gz")
    assert np.allclose(labels.affine, ct.affine) and labels.get_data_dtype() == np.uint8
    findings = json.loads(Path(f"{stem}_findings.json").read_text())
    assert findings["lesions"][0]["lobe"] == "right_lower" and findings["effusion"]["side"] == "left"


def test_maisi_cli_lesion_in_right_lower_lobe_at_size(generated):
    _, out, _ = generated
    labels = np.asarray(nib.load(str(out).replace(".nii.gz", "_labels.nii.gz")).dataobj)
    lesion = labels == 23
    shell = ndimage.binary_dilation(lesion) & ~lesion
    assert lesion.any() and (labels[shell] == 32).mean() > 0.95  # wrapped in the right lower lobe label
    diameter = (6 * lesion.sum() * 1.5 * 1.5 * 2.5 / np.pi) ** (1 / 3)
    assert diameter == pytest.approx(30.0, rel=0.2)
    hu = np.asarray(nib.load(out).dataobj)
    assert hu[lesion].mean() == pytest.approx(-750 + 800 * 0.95, abs=1.0)  # calibrated to the density target


def test_maisi_cli_effusion_documented(generated):
    _, out, stderr = generated
    labels = np.asarray(nib.load(str(out).replace(".nii.gz", "_labels.nii.gz")).dataobj)
    fluid = labels == 210
    assert fluid.any() and (np.argwhere(fluid)[:, 0] < 128).all()  # left side: x < 0 in RAS
    assert "pleural effusion composed" in stderr and "stand-in" in stderr
    sidecar = json.loads(out.with_suffix("").with_suffix(".json").read_text())
    maisi = sidecar["maisi"]
    assert maisi["effusion"]["target_hu"] == 10.0 and maisi["effusion"]["voxels"] == int(fluid.sum())
    assert sidecar["layout"]["label_table"]["effusion"] == 210 and sidecar["layout"]["label_space"] == "maisi"
    assert sidecar["layout"]["coarse_label_table"]["lesion_1"] == 20
    assert sidecar["synthetic"] is True and sidecar["renderer"] == "maisi" and sidecar["seed"] == 0
    assert "stand-in" in sidecar["license"]["name"] and sidecar["model_id"] == "maisi-rflow-ct-standin"
    folder = Path(maisi["folder"])
    for rel, digest in sidecar["weights_sha256"].items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest


def test_maisi_cli_refuses_bad_grid_before_weights(standin, tmp_path, capsys, monkeypatch):
    import medgen.render.maisi.networks as networks

    monkeypatch.setattr(networks, "read_checkpoint", lambda *a, **k: pytest.fail("weights were read"))
    for grid, words in ((["--shape", "200", "200", "128"], "not a MAISI grid"),
                        (["--shape", "256", "256", "128", "--spacing", "0.9"], "field of view"),
                        (["--shape", "512", "512", "256", "--spacing", "0.75", "0.8", "1"], "spacing")):
        rc = main(["generate", "--renderer", "maisi", "--maisi", str(standin), "--report", REPORT, *grid,
                   "--out", str(tmp_path / "x.nii.gz")])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("medgen: error: ") and words in err and err.count("\n") == 1
    rc = main(["generate", "--renderer", "maisi", "--maisi", str(tmp_path / "none"), "--report", REPORT, *GRID,
               "--out", str(tmp_path / "x.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2 and "no MAISI folder" in err and "medgen models fetch maisi" in err and err.count("\n") == 1
    rc = main(["generate", "--maisi", str(standin), "--report", REPORT, "--out", str(tmp_path / "x.nii.gz")])
    assert rc == 2 and "--renderer maisi" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_maisi_models_fetch_offline_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["models", "fetch", "maisi", "--out", str(tmp_path / "maisi")])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and err.startswith("medgen: error: cannot download MAISI") and err.count("\n") == 1
    assert "by hand" in err and "huggingface-cli download nvidia/NV-Generate-CT" in err and "Traceback" not in err
    assert not (tmp_path / "maisi").exists()  # nothing half-written


def test_maisi_benchmark_help():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_maisi_gpu.py"
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "--maisi" in proc.stdout and "512 x 512 x 256" in proc.stdout
