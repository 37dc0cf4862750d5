"""`medgen generate`: single report, report file, batch manifest, and every bad input (one line, no files)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import pytest
import torch
from test_pipeline import make_tiny_pipeline, single_thread  # noqa: F401 (autouse fixture)

from medgen.cli.main import main

REPORT = "A 12 mm ground-glass nodule in the right upper lobe."


@pytest.fixture(scope="module")
def model_dir(tiny_bert_dir, tmp_path_factory):
    """Tiny pipeline whose defaults are cheap: 8^3 voxels, 2 steps, no guidance branches."""
    pipe = make_tiny_pipeline(tiny_bert_dir)
    pipe.config.update(shape=[8, 8, 8], num_inference_steps=2, guidance={"text": 1.0, "density": 1.0})
    return pipe.save_pretrained(tmp_path_factory.mktemp("cli") / "model")


def run(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_single_report(model_dir, tmp_path, capsys):
    out = tmp_path / "vol" / "ct.nii.gz"
    code, stdout, err = run(["generate", "--report", REPORT, "--out", out, "--model", model_dir, "--seed", 4,
                             "--density", 0.2], capsys)
    assert code == 0, err
    assert files_under(tmp_path / "vol") == ["ct.json", "ct.nii.gz", "ct.png"]
    assert str(out) in stdout.splitlines()
    sidecar = json.loads((tmp_path / "vol" / "ct.json").read_text(encoding="utf-8"))
    assert (sidecar["report"], sidecar["seed"], sidecar["density"]) == (REPORT, 4, 0.2)
    assert (sidecar["num_inference_steps"], sidecar["shape"]) == (2, [8, 8, 8])  # the model's defaults
    img = nib.load(out)
    assert img.shape == (8, 8, 8) and img.header["descrip"].item().startswith(b"SYNTHETIC")


def test_report_file_options_and_dicom(model_dir, tmp_path, capsys):
    report_file = tmp_path / "report.txt"
    report_file.write_text("左肺下叶实性结节，大小约8毫米。", encoding="utf-8")
    out = tmp_path / "out" / "zh.nii.gz"
    argv = ["generate", "--report-file", report_file, "--out", out, "--model", model_dir, "--shape", 16, 16, 16,
            "--steps", 1, "--guidance", 1.5, "--density-guidance", 1.0, "--no-preview",
            "--dicom-out", tmp_path / "out" / "zh-dicom"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert files_under(tmp_path / "out")[:3] == ["zh-dicom", "zh-dicom/provenance.json", "zh-dicom/slice_0001.dcm"]
    assert not (tmp_path / "out" / "zh.png").exists()
    sidecar = json.loads((tmp_path / "out" / "zh.json").read_text(encoding="utf-8"))
    assert sidecar["report"].startswith("左肺下叶")
    assert (sidecar["num_inference_steps"], sidecar["guidance_scale"], sidecar["shape"]) == (1, 1.5, [16, 16, 16])
    assert sidecar["spacing"] == [20.0] * 3 and sidecar["grid"]["native_shape"] == [8, 8, 8]  # same 320 mm FOV
    assert nib.load(out).shape == (16, 16, 16) and nib.load(out).header.get_zooms() == (20.0, 20.0, 20.0)
    # same seed (default 0), same command -> identical voxels; --overwrite replaces
    first = nib.load(out).get_fdata()
    code, _, err = run(argv + ["--overwrite"], capsys)
    assert code == 0, err
    assert (nib.load(out).get_fdata() == first).all()


def test_batch_manifest(model_dir, tmp_path, capsys):
    manifest = tmp_path / "reports.jsonl"
    rows = [{"id": "case-a", "report": REPORT, "density": 0.9, "seed": 7}, {"id": "case_b", "text": "Normal chest CT."}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    out_dir = tmp_path / "batch"
    code, stdout, err = run(["generate", "--manifest", manifest, "--out-dir", out_dir, "--model", model_dir,
                             "--seed", 100], capsys)
    assert code == 0, err
    assert files_under(out_dir) == sorted(["results.jsonl", *(f"{i}.{ext}" for i in ("case-a", "case_b")
                                                             for ext in ("json", "nii.gz", "png"))])
    a = json.loads((out_dir / "case-a.json").read_text())
    b = json.loads((out_dir / "case_b.json").read_text())
    assert (a["seed"], a["density"], b["seed"], b["density"]) == (7, 0.9, 101, None)  # row 1 default: --seed + 1
    assert b["report"] == "Normal chest CT."
    assert "wrote 2 volume(s)" in stdout


def test_missing_default_model_is_explained(tmp_path, capsys, monkeypatch):
    import medgen.pipelines.default_model as default_model

    monkeypatch.setattr(default_model, "default_model_path", lambda: tmp_path / "default-model")
    code, _, err = run(["generate", "--report", REPORT, "--out", tmp_path / "x.nii.gz"], capsys)
    assert code == 2 and "default model is not installed" in err and "--model" in err
    assert files_under(tmp_path) == []


def _broken_model(model_dir, work: Path, how: str) -> Path:
    broken = Path(shutil.copytree(model_dir, work / "broken-model"))
    if how == "no-index":
        (broken / "model_index.json").unlink()
    elif how == "pickle":
        (broken / "unet" / "model.safetensors").unlink()
        (broken / "unet" / "model.bin").write_bytes(pickle.dumps({"w": torch.zeros(2)}))
    elif how == "garbage":
        (broken / "autoencoder" / "model.safetensors").write_bytes(b"not safetensors at all")
    elif how == "bad-json":
        (broken / "unet" / "config.json").write_text("{oops")
    return broken


# case -> (options replacing the base command's: flag -> values, or None to drop the flag; expected text).
# "{work}" is the test's folder; "@how" a broken copy of the model (see `_broken_model`).
BAD = {
    "empty report": ({"--report": [""]}, "empty"),
    "blank report": ({"--report": ["  \n "]}, "empty"),
    "long report": ({"--report": ["x" * 20_001]}, "20000"),
    "binary report": ({"--report": ["\x01\x02\x03\x04\x05\x06 ab"]}, "non-printable"),
    "binary file": ({"--report": None, "--report-file": ["{work}/bin.txt"]}, "NUL bytes"),
    "latin-1 file": ({"--report": None, "--report-file": ["{work}/latin1.txt"]}, "UTF-8"),
    "missing file": ({"--report": None, "--report-file": ["{work}/none.txt"]}, "not found"),
    "density nan": ({"--density": ["nan"]}, "density"),
    "density high": ({"--density": ["1.5"]}, "density"),
    "density low": ({"--density": ["-0.2"]}, "density"),
    "density word": ({"--density": ["solid"]}, "--density"),
    "steps zero": ({"--steps": ["0"]}, "steps"),
    "steps negative": ({"--steps": ["-3"]}, "steps"),
    "steps float": ({"--steps": ["2.5"]}, "--steps"),
    "steps too many": ({"--steps": ["5000"]}, "at most 1000"),
    "guidance nan": ({"--guidance": ["nan"]}, "guidance"),
    "density guidance negative": ({"--density-guidance": ["-1"]}, "density-guidance"),
    "seed negative": ({"--seed": ["-1"]}, "seed"),
    "shape anisotropic": ({"--shape": ["15", "16", "16"]}, "anisotropic"),
    "shape zero": ({"--shape": ["0", "16", "16"]}, "positive"),
    "shape below native": ({"--shape": ["4", "4", "4"]}, "below the model's native grid"),
    "shape not x2": ({"--shape": ["24", "24", "24"]}, "not reachable"),
    "spacing not dividing": ({"--spacing": ["30"]}, "whole voxels"),
    "spacing two values": ({"--spacing": ["10", "20"]}, "one value or three"),
    "fov not the model's": ({"--fov": ["400"]}, "field of view"),
    "shape spacing fov": ({"--shape": ["16", "16", "16"], "--spacing": ["20"], "--fov": ["320"]}, "at most two"),
    "device unknown": ({"--device": ["tpu"]}, "device"),
    "model missing": ({"--model": ["{work}/no-model"]}, "not found"),
    "model no index": ({"--model": ["@no-index"]}, "model_index.json"),
    "model pickle": ({"--model": ["@pickle"]}, "pickle"),
    "model garbage": ({"--model": ["@garbage"]}, "safetensors"),
    "model bad json": ({"--model": ["@bad-json"]}, "corrupt JSON"),
    "out not nifti": ({"--out": ["{work}/out/x.mha"]}, "nii"),
    "out missing": ({"--out": None}, "--out"),
    "out exists": ({"--out": ["{work}/out/exists.nii.gz"]}, "exists"),
    "sidecar exists": ({"--out": ["{work}/out/side.nii.gz"]}, "side.json"),
    "manifest with --out": ({"--report": None, "--manifest": ["{work}/ok.jsonl"]}, "--out-dir"),
}
if not torch.cuda.is_available():
    BAD["cuda unavailable"] = ({"--device": ["cuda"]}, "CUDA is not available")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_with_one_line_and_no_files(model_dir, tmp_path, capsys, case):
    changes, message = BAD[case]
    work = tmp_path
    (work / "bin.txt").write_bytes(b"lung\x00\x00\x01")
    (work / "latin1.txt").write_bytes("Épanchement".encode("latin-1"))
    (work / "ok.jsonl").write_text(json.dumps({"id": "a", "report": REPORT}) + "\n")
    (work / "out").mkdir()
    (work / "out" / "exists.nii.gz").write_bytes(b"keep me")
    (work / "out" / "side.json").write_bytes(b"keep me")

    def value(v: str) -> str:
        return str(_broken_model(model_dir, work, v[1:])) if v.startswith("@") else v.format(work=work)

    base = {"--report": [REPORT], "--out": [str(work / "out" / "new.nii.gz")], "--model": [str(model_dir)]}
    args = ["generate"]
    for flag, values in {**base, **changes}.items():
        if values is not None:
            args += [flag, *(value(v) for v in values)]
    before = files_under(work)

    code, _, err = run(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medgen: error: "), err
    assert message in lines[0]
    assert files_under(work) == before  # nothing written, nothing left behind
    assert (work / "out" / "exists.nii.gz").read_bytes() == b"keep me"


MANIFEST_BAD = {
    "bad json": ('{"id": "a", "report": "x"}\n{"id": "b", report}\n', "line 2: not valid JSON"),
    "empty report": ('{"id": "a", "report": "fine"}\n{"id": "b", "report": " "}\n', "line 2: `report` is empty"),
    "duplicate id": ('{"id": "a", "report": "x"}\n{"id": "a", "report": "y"}\n', "duplicate"),
    "unsafe id": ('{"id": "../a", "report": "x"}\n', '"id"'),
    "no report": ('{"id": "a"}\n', '"report" or "text"'),
    "bad density": ('{"id": "a", "report": "x", "density": 2}\n', "density"),
    "bad seed": ('{"id": "a", "report": "x", "seed": "s"}\n', "seed"),
    "not an object": ("[1, 2]\n", "JSON object"),
    "empty": ("\n\n", "no rows"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_BAD))
def test_bad_manifest_fails_before_any_generation(model_dir, tmp_path, capsys, case):
    text, message = MANIFEST_BAD[case]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(text, encoding="utf-8")
    code, _, err = run(["generate", "--manifest", manifest, "--out-dir", tmp_path / "batch", "--model", model_dir],
                       capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(manifest) in err and message in err
    assert not (tmp_path / "batch").exists()


def test_batch_refuses_existing_outputs_before_generating(model_dir, tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "report": "x"}\n{"id": "b", "report": "y"}\n')
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "b.png").write_bytes(b"old")
    code, _, err = run(["generate", "--manifest", manifest, "--out-dir", tmp_path / "batch", "--model", model_dir],
                       capsys)
    assert code == 2 and "b.png" in err
    assert files_under(tmp_path / "batch") == ["b.png"]  # row "a" was not generated either


def test_grid_misuse_is_refused_before_any_weights_load(model_dir, tmp_path, capsys, monkeypatch):
    """`--shape 8 8 8` on the 64^3 default used to end in a traceback; now the model index alone decides."""
    from medgen.pipelines.text_to_volume import ReportToVolumePipeline

    def no_loading(*args, **kwargs):
        raise AssertionError("weights loaded before the grid check")

    monkeypatch.setattr(ReportToVolumePipeline, "from_pretrained", classmethod(no_loading))
    for flags, message in ((["--shape", 4, 4, 4], "below the model's native grid"),
                           (["--fov", 500], "field of view"), (["--spacing", 7], "whole voxels")):
        code, _, err = run(["generate", "--report", REPORT, "--out", tmp_path / "g.nii.gz", "--model", model_dir,
                            *flags], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
        assert not list(tmp_path.iterdir())
