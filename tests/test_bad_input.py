"""The bad-input corpus: what a hostile user tried (issue 23) is refused in one `medgen: error:` line, exit 2,
nothing written, before any model loads; the Python API refuses the same values; edits keep the input's grid;
staging folders do not outlive a killed save; provenance names the model, not where it is installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_pipeline import make_tiny_pipeline, single_thread  # noqa: F401 (autouse fixture)

from medgen.cli.main import main
from medgen.edit import EditPipeline
from medgen.errors import MedgenError
from medgen.findings import LABELS, LOBE_LABELS, Effusion, Findings, FindingsError, Lesion
from medgen.io import load_volume, read_dicom_series, reorient, save_nifti, write_dicom_series
from medgen.io.atomic import STAGING_PREFIX, check_output_path
from medgen.phantom.chest import make_phantom
from medgen.volume import Volume, make_affine

REPORT = "A 25 mm solid nodule in the right lower lobe."
LESION = Lesion(lobe="right_lower", diameter_mm=40.0, density=0.9)
DEEP = "[" * 50_000 + "]" * 50_000


@pytest.fixture(scope="module")
def text_model(tiny_bert_dir, tmp_path_factory):
    pipe = make_tiny_pipeline(tiny_bert_dir)
    pipe.config.update(num_inference_steps=2, guidance={"text": 1.0, "density": 1.0})
    return pipe.save_pretrained(tmp_path_factory.mktemp("bad_input") / "model")


@pytest.fixture(scope="module")
def chest():
    case = make_phantom(Findings(), shape=32, spacing=10.0, seed=880_500)
    return Volume(np.asarray(case.image.array, np.float32), case.image.affine.copy())


@pytest.fixture(scope="module")
def layout_pipe(tiny_layout_model_dir):
    from medgen.pipelines import ReportToVolumePipeline

    return ReportToVolumePipeline.from_pretrained(tiny_layout_model_dir)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def run(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_model_loads(monkeypatch):
    """Every model loader fails the test: a refusal must come before any weights are read."""
    from medgen.pipelines.text_to_volume import ReportToVolumePipeline
    from medgen.reader import ReportReader
    from medgen.slices.describer.model import SliceReader
    from medgen.slices.generator.pipeline import SlicePreviewPipeline

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was refused")

    for cls in (ReportToVolumePipeline, SlicePreviewPipeline, SliceReader, ReportReader):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(loaded))


def _work(folder: Path, chest: Volume) -> None:
    (folder / "afile").write_bytes(b"a file, not a folder")
    save_nifti(chest, folder / "ct.nii.gz")
    save_nifti(chest.with_array(chest.array * 1000.0), folder / "ct_x1000.nii.gz", dtype=np.float32)
    (folder / "add.json").write_text(Findings(lesions=[LESION]).to_json(), encoding="utf-8")
    (folder / "deep.json").write_text(DEEP, encoding="utf-8")
    (folder / "many.json").write_text(Findings(lesions=[LESION] * 500).to_json(), encoding="utf-8")
    labels = np.zeros(chest.shape, np.float32)
    labels[0, 0, 0] = np.nan
    save_nifti(chest.with_array(labels), folder / "nan_labels.nii.gz", dtype=np.float32)
    save_nifti(chest.with_array(np.full(chest.shape, 0.5, np.float32)), folder / "frac_labels.nii.gz", dtype=np.float32)
    (folder / "taken_labels.nii.gz").write_bytes(b"keep me")  # beside taken.nii.gz, which is not there yet


GEN = ["generate", "--report", REPORT, "--model", "{text_model}"]
GEN_OUT = [*GEN, "--out", "{w}/g.nii.gz"]
EDIT = ["edit", "--ct", "{w}/ct.nii.gz", "--findings", "{w}/add.json", "--model", "{layout_model}"]
EDIT_OUT = [*EDIT, "--out", "{w}/e.nii.gz"]
PREVIEW = ["preview", "--report", REPORT]
PREVIEW_OUT = [*PREVIEW, "--out", "{w}/p.png"]
DESCRIBE = ["describe", "{w}/ct.nii.gz"]
# argv -> a piece of the one error line
CORPUS = {
    # 2. tracebacks
    "findings nested 50000 deep": (["generate", "--findings", "{w}/deep.json", "--out", "{w}/g.nii.gz",
                                    "--model", "{layout_model}"], "nested too deeply"),
    "edit re-density a removed lesion": (["edit", "--ct", "{w}/ct.nii.gz", "--set-density", "1=0.2", "--remove",
                                          "1", "--out", "{w}/e.nii.gz"], "both removed and given a new density"),
    "preview out under /proc": ([*PREVIEW, "--out", "/proc/medgen-p.png"], "not writable"),
    "describe out under /proc": ([*DESCRIBE, "--out", "/proc/medgen-d.json"], "not writable"),
    # 3. NaN and absurd numbers
    "generate guidance 1e30": ([*GEN_OUT, "--guidance", "1e30"], "`guidance` must be a finite number in [0, 50]"),
    "generate density guidance inf": ([*GEN_OUT, "--density-guidance", "inf"], "`density-guidance`"),
    "edit guidance nan": ([*EDIT_OUT, "--guidance", "nan"], "`guidance`"),
    "edit guidance 1e30": ([*EDIT_OUT, "--guidance", "1e30"], "`guidance`"),
    "edit margin inf": ([*EDIT_OUT, "--margin-mm", "inf"], "`margin-mm`"),
    "edit margin nan": ([*EDIT_OUT, "--margin-mm", "nan"], "`margin-mm`"),
    "edit margin zero": ([*EDIT_OUT, "--margin-mm", "0"], "`margin-mm`"),
    "edit margin huge": ([*EDIT_OUT, "--margin-mm", "1e9"], "`margin-mm`"),
    "preview guidance nan": ([*PREVIEW_OUT, "--guidance", "nan"], "`guidance`"),
    "preview guidance 1e30": ([*PREVIEW_OUT, "--guidance", "1e30"], "`guidance`"),
    "preview density guidance nan": ([*PREVIEW_OUT, "--density-guidance", "nan"], "`density-guidance`"),
    # 4. outputs that cannot be written, checks that waited for the model
    "generate out under a file": ([*GEN, "--out", "{w}/afile/x.nii.gz"], "afile is a file, not a folder"),
    "generate out under /proc": ([*GEN, "--out", "/proc/medgen-x.nii.gz"], "not writable"),
    "generate dicom under a file": ([*GEN_OUT, "--dicom-out", "{w}/afile/d"], "afile is a file"),
    "edit out under a file": ([*EDIT, "--out", "{w}/afile/e.nii.gz"], "afile is a file"),
    "edit dicom under a file": ([*EDIT_OUT, "--dicom-out", "{w}/afile/d"], "afile is a file"),
    "preview out under a file": ([*PREVIEW, "--out", "{w}/afile/p.png"], "afile is a file"),
    "describe out under a file": ([*DESCRIBE, "--out", "{w}/afile/d.json"], "afile is a file"),
    "read out under a file": (["read", "--report", REPORT, "--out", "{w}/afile/r.json"], "afile is a file"),
    "generate steps 10000": ([*GEN_OUT, "--steps", "10000"], "at most 1000"),
    "edit steps 10000": ([*EDIT_OUT, "--steps", "10000"], "at most 1000"),
    "preview steps 10000": ([*PREVIEW_OUT, "--steps", "10000"], "at most 1000"),
    "generate existing label map": (["generate", "--findings", "{w}/add.json", "--out", "{w}/taken.nii.gz",
                                     "--model", "{layout_model}", "--no-preview"], "taken_labels.nii.gz"),
    # 5. nonsense
    "edit CT not in HU": (["edit", "--ct", "{w}/ct_x1000.nii.gz", "--findings", "{w}/add.json",
                           "--out", "{w}/e.nii.gz"], "outside the CT range [-3024, 30710] HU"),
    "describe NaN label map": ([*DESCRIBE, "--labels", "{w}/nan_labels.nii.gz"], "non-finite"),
    "describe fractional label map": ([*DESCRIBE, "--labels", "{w}/frac_labels.nii.gz"], "non-negative integers"),
    "describe n-slices huge": ([*DESCRIBE, "--n-slices", "1000000"], "at most 64"),
    # 6. messages
    "500 findings": (["generate", "--findings", "{w}/many.json", "--out", "{w}/g.nii.gz",
                      "--model", "{layout_model}"], "holds 500 lesions; a layout holds at most 20"),
    "edit seed -1": ([*EDIT_OUT, "--seed", "-1"], "`seed`"),
    "read without a report": (["read"], "--report"),
    "preview without --out": (PREVIEW, "--out"),
    "describe without a volume": (["describe"], "volume"),
    "no command": ([], "command"),
    "data synth bad int": (["data", "synth", "--n", "x", "--out", "{w}/d"], "--n"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_input_is_refused_in_one_line_before_any_model_loads(case, text_model, tiny_layout_model_dir, chest,
                                                                 tmp_path, capsys, no_model_loads):
    argv, message = CORPUS[case]
    _work(tmp_path, chest)
    before = files_under(tmp_path)
    values = {"w": tmp_path, "text_model": text_model, "layout_model": tiny_layout_model_dir}
    code, out, err = run([a.format(**values) for a in argv], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("medgen: error: "), err
    assert message in lines[0], lines[0]
    assert "`report` has" not in lines[0]
    assert files_under(tmp_path) == before  # nothing written, no staging or probe folder left
    assert (tmp_path / "taken_labels.nii.gz").read_bytes() == b"keep me"


def test_evaluate_without_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as in an install without the eval extra
    code, _, err = run(["evaluate", "--out", tmp_path / "ev", "--quick"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'medgen[eval]'" in err
    assert not (tmp_path / "ev").exists()


def test_reader_only_evaluation_needs_no_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the reader section draws no plot
    code, _, err = run(["evaluate", "--out", tmp_path / "ev", "--reader-only"], capsys)
    assert code == 0, err
    summary = (tmp_path / "ev" / "summary.md").read_text(encoding="utf-8")
    assert "report reader only" in summary and "None" not in summary.splitlines()[2]


# --- the Python API refuses the same values ----------------------------------------------------------------

def test_deeply_nested_findings_json_is_a_findings_error(tmp_path):
    from medgen.io.sidecar import read_json_object

    with pytest.raises(FindingsError, match="nested too deeply"):
        Findings.from_json(DEEP)
    (tmp_path / "deep.json").write_text(DEEP)
    with pytest.raises(MedgenError, match="nested too deeply"):
        read_json_object(tmp_path / "deep.json")


@pytest.mark.parametrize("kwargs, message", [
    ({"guidance_scale": 1e30}, "guidance_scale"),
    ({"guidance_scale": float("inf")}, "guidance_scale"),
    ({"density_guidance_scale": float("nan")}, "density_guidance_scale"),
    ({"num_inference_steps": 10_000}, "at most 1000"),
])
def test_pipeline_refuses_absurd_numbers(text_model, kwargs, message):
    from medgen.pipelines import ReportToVolumePipeline

    with pytest.raises(ValueError, match=message):
        ReportToVolumePipeline.from_pretrained(text_model)(REPORT, progress=False, **kwargs)


def test_pipeline_counts_lesions_before_writing_a_report_from_them(layout_pipe):
    with pytest.raises(ValueError, match="holds 500 lesions") as info:
        layout_pipe(None, findings=Findings(lesions=[LESION] * 500), progress=False)
    assert "`report`" not in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"margin_mm": float("inf")}, "margin_mm"),
    ({"margin_mm": float("nan")}, "margin_mm"),
    ({"guidance_scale": float("nan")}, "guidance_scale"),
    ({"guidance_scale": 1e30}, "guidance_scale"),
    ({"seed": -1}, "seed"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"remove": [1], "densities": {1: 0.2}}, "both removed"),
])
def test_edit_api_refuses_before_any_work(layout_pipe, chest, kwargs, message, monkeypatch):
    import medgen.edit.editor as editor

    monkeypatch.setattr(editor, "sample_latents", lambda *a, **k: pytest.fail("sampled before refusing"))
    with pytest.raises((ValueError, MedgenError), match=message):
        EditPipeline.from_pipe(layout_pipe)(chest, findings=Findings(lesions=[LESION]), **kwargs)


def test_edit_refuses_a_ct_that_is_not_in_hu(layout_pipe, chest):
    with pytest.raises(ValueError, match=r"outside the CT range \[-3024, 30710\] HU"):
        EditPipeline.from_pipe(layout_pipe)(chest.with_array(chest.array * 1000.0), findings=Findings([LESION]))
    with pytest.raises(ValueError, match="non-finite"):
        EditPipeline.from_pipe(layout_pipe)(chest.with_array(chest.array * np.nan), findings=Findings([LESION]))


def test_preview_api_refuses_absurd_numbers():
    from medgen.diffusion.guidance import Guidance
    from medgen.slices.generator.pipeline import SlicePreviewPipeline

    pipe = SlicePreviewPipeline(model=None)  # refused before the model is used
    for kwargs, message in (({"guidance": Guidance(text=float("nan"))}, "guidance.text"),
                            ({"guidance": Guidance(text=2.0, density=1e30)}, "guidance.density"),
                            ({"steps": 10_000}, "at most 1000"), ({"seed": -1}, "seed")):
        with pytest.raises(ValueError, match=message):
            pipe(REPORT, **kwargs)


def test_check_output_path_probes_the_folder_and_leaves_nothing(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(MedgenError, match="afile is a file, not a folder"):
        check_output_path(tmp_path / "afile" / "deeper" / "x.nii.gz")
    with pytest.raises(MedgenError, match="/proc is not writable"):
        check_output_path("/proc/x.nii.gz")
    assert check_output_path(tmp_path / "new" / "sub" / "x.nii.gz") == tmp_path / "new" / "sub" / "x.nii.gz"
    assert files_under(tmp_path) == ["afile"]  # the probe folder is gone, no folder was made


# --- 5. a lesion that cannot fit its lobe -------------------------------------------------------------------

def test_a_lesion_larger_than_its_lobe_is_warned_about_and_leaves_the_other_lobes():
    from medgen.layout import make_layout

    findings = Findings([Lesion("right_lower", 500.0, 0.9)], effusion=Effusion("right", "moderate"))
    layout = make_layout(findings, shape=32, spacing=10.0, seed=0)
    labels = np.asarray(layout.labels.array)
    assert any("cannot fit its lobe" in w for w in layout.warnings), layout.warnings
    for lobe, value in LOBE_LABELS.items():
        if lobe != "right_lower":
            assert (labels == value).any(), f"the lesion took the {lobe} lobe"
    assert (labels == LABELS["effusion"]).any()
    small = make_layout(Findings([LESION]), shape=32, spacing=10.0, seed=0)
    assert not any("cannot fit" in w for w in small.warnings)


# --- 8. an edit keeps the input's grid ----------------------------------------------------------------------

@pytest.mark.parametrize("axcodes", ["LPS", "LAS", "RAS"])
def test_edit_writes_on_the_input_grid(layout_pipe, chest, tmp_path, axcodes):
    native = reorient(chest, axcodes)
    path = save_nifti(native, tmp_path / f"ct_{axcodes}.nii.gz", canonical=False)
    given = nib.load(path)
    result = EditPipeline.from_pipe(layout_pipe)(path, findings=Findings([LESION]), num_inference_steps=1,
                                                 progress=False)
    region = result.edit_region
    assert region.shape == given.shape and region.any()
    written = result.save(tmp_path / "out.nii.gz", preview=False)
    out, labels = nib.load(written["nifti"]), nib.load(written["labels"])
    assert "".join(nib.aff2axcodes(out.affine)) == axcodes
    assert out.shape == given.shape and np.array_equal(out.affine, given.affine)
    assert labels.shape == given.shape and np.array_equal(labels.affine, given.affine)
    assert out.get_data_dtype() == given.get_data_dtype()
    before, after = np.asarray(given.dataobj), np.asarray(out.dataobj)
    assert np.array_equal(after[~region], before[~region])  # outside the margin: the input, voxel for voxel
    assert not np.array_equal(after[region], before[region])


def test_edit_of_a_dicom_series_keeps_the_series_grid(layout_pipe, chest, tmp_path):
    series = tmp_path / "series"
    write_dicom_series(chest, series)
    native = read_dicom_series(series, canonical=False)
    result = EditPipeline.from_pipe(layout_pipe)(series, findings=Findings([LESION]), num_inference_steps=1,
                                                 progress=False)
    assert result.volume.shape == native.shape and np.array_equal(result.volume.affine, native.affine)
    out = nib.load(result.save(tmp_path / "out.nii.gz", preview=False)["nifti"])
    assert np.array_equal(out.affine, native.affine)
    assert np.array_equal(np.asarray(out.dataobj)[~result.edit_region], native.array[~result.edit_region])


def test_cli_edit_keeps_an_lps_input_grid(tiny_layout_model_dir, chest, tmp_path):
    path = save_nifti(reorient(chest, "LPS"), tmp_path / "ct.nii.gz", canonical=False)
    (tmp_path / "add.json").write_text(Findings([LESION]).to_json(), encoding="utf-8")
    assert main(["edit", "--ct", str(path), "--findings", str(tmp_path / "add.json"), "--out",
                 str(tmp_path / "e.nii.gz"), "--model", str(tiny_layout_model_dir), "--steps", "1",
                 "--no-preview"]) == 0
    given, out = nib.load(path), nib.load(tmp_path / "e.nii.gz")
    assert out.shape == given.shape and np.array_equal(out.affine, given.affine)
    assert load_volume(tmp_path / "e.nii.gz", canonical=False).orientation == "LPS"


# --- 7. staging folders --------------------------------------------------------------------------------------

SAVE_AND_HANG = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    import medgen.pipelines.result as result
    from medgen.volume import Volume, make_affine

    def hang(*args, **kwargs):  # the preview is written last: the NIfTI and sidecar are staged by now
        Path(sys.argv[2]).write_text("saving")
        time.sleep(120)

    result.render_orthogonal = hang
    volume = Volume(np.zeros((8, 8, 8), np.float32), make_affine(8, 5.0))
    result.GenerationResult(volume, None, {"seed": 0}).save(Path(sys.argv[1]) / "x.nii.gz")
""")


def test_sigterm_during_a_save_removes_its_staging_folder(tmp_path):
    out, marker = tmp_path / "out", tmp_path / "marker"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SAVE_AND_HANG, str(out), str(marker)])
    try:
        deadline = time.time() + 120
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the save never started"
        assert [p.name for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]  # staged, not yet renamed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM  # still ends as SIGTERM does
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(out.iterdir()) == []


def test_stale_staging_folders_are_removed_by_the_next_save(tmp_path):
    from medgen.io.atomic import _host
    from medgen.pipelines.result import GenerationResult

    dead = tmp_path / f"{STAGING_PREFIX}{_host()}.999999999.abcdefgh"  # no such pid
    old = tmp_path / f"{STAGING_PREFIX}another-host.12.abcdefgh"
    legacy = tmp_path / f"{STAGING_PREFIX}k3j4h5g6"  # named before the pid was part of the name
    live = tmp_path / f"{STAGING_PREFIX}{_host()}.{os.getpid()}.abcdefgh"  # a save still running
    recent = tmp_path / f"{STAGING_PREFIX}another-host.12.ijklmnop"  # another host's, too young to judge
    for folder in (dead, old, legacy, live, recent):
        folder.mkdir()
        (folder / "x.nii.gz").write_bytes(b"partial")
    hours_ago = time.time() - 2 * 3600
    for folder in (old, legacy):
        os.utime(folder, (hours_ago, hours_ago))
    volume = Volume(np.zeros((8, 8, 8), np.float32), make_affine(8, 5.0))
    GenerationResult(volume, None, {"seed": 0}).save(tmp_path / "ct.nii.gz", preview=False)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["ct.nii.gz", "ct.json", live.name, recent.name])


# --- 6. preview output, 9. provenance -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_preview(tmp_path_factory):
    from test_slice_preview import DEFAULT, TINY

    from medgen.slices.generator.recipe import train_preview_model

    out = tmp_path_factory.mktemp("preview") / "model"
    train_preview_model(out, text_encoder_dir=DEFAULT / "text_encoder", reader_dir=DEFAULT / "reader",
                        anatomy_bank_dir=DEFAULT / "anatomy_bank", **TINY)
    return out


def test_preview_prints_and_records_no_library_deprecation_warning(tiny_preview, tmp_path, capsys):
    out = tmp_path / "p.png"
    code, stdout, err = run(["preview", "--report", REPORT, "--out", out, "--n", "1", "--steps", "2",
                             "--model", tiny_preview], capsys)
    assert code == 0, err
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert not any("__array__" in w for w in sidecar["warnings"])
    assert "__array__" not in stdout + err and "warning" not in stdout


def test_provenance_names_the_model_by_id_version_and_sha256(text_model, monkeypatch):
    import medgen.pipelines.default_model as default_model
    from medgen._version import __version__
    from medgen.pipelines import ReportToVolumePipeline

    user = ReportToVolumePipeline.from_pretrained(text_model).model_record()
    assert user["model_path"] == str(text_model) and user["model_id"] == "tiny"  # the user named the folder
    monkeypatch.setattr(default_model, "default_model_path", lambda: Path(text_model).resolve())
    pipe = ReportToVolumePipeline.from_pretrained(text_model)
    record = pipe(REPORT, num_inference_steps=1, progress=False).provenance
    assert record["model_id"] == "medgen-default" and record["model_path"] is None
    assert record["model_name"] == "tiny" and record["model_version"] == __version__
    assert len(record["model_sha256"]) == 64
    assert str(Path(text_model).resolve()) not in json.dumps(record) and str(text_model) not in json.dumps(record)
