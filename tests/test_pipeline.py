"""ReportToVolumePipeline: save/load, generation (geometry, HU, guidance, determinism, batch), input checks, saving.

Built from configs/tiny.yaml with the tiny BERT; the untrained conditioning embedding is randomised so that
density and pooled text change the output. Most calls use 16^3 voxels and 2 steps to stay fast.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from medgen.errors import InputFileError, MedgenError, ModelNotFoundError, OutputExistsError
from medgen.pipelines.build import build_pipeline
from medgen.pipelines.text_to_volume import ReportToVolumePipeline
from medgen.volume import make_affine

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
REPORT = "A 12 mm solid nodule in the right upper lobe. Small left pleural effusion."
# Small and single-branch (w_t = w_d = 1) where guidance is not what a test is about.
FAST = {"shape": (8, 8, 8), "num_inference_steps": 2, "guidance_scale": 1.0, "density_guidance_scale": 1.0,
        "progress": False}


def make_tiny_pipeline(bert_dir) -> ReportToVolumePipeline:
    from medgen.text import TextEncoder

    torch.manual_seed(0)
    pipe = build_pipeline(yaml.safe_load(CONFIG.read_text()), TextEncoder.from_pretrained(bert_dir))
    pipe.config.update(shape=[8, 8, 8], spacing=[40.0, 40.0, 40.0])  # native grid: 320 mm FOV, as the real model
    with torch.no_grad():  # untrained, the output layers are zero (eps = 0): randomise so conditions matter
        for param in pipe.unet.parameters():
            if param.dim() > 1 and not param.any():
                param.normal_(0.0, 0.05)
        for param in pipe.unet.condition_embedding.parameters():
            param.normal_(0.0, 0.5)
    return pipe


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny networks run ~100x faster on one thread than on two contended ones (OpenMP waits per op)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe(tiny_bert_dir):
    return make_tiny_pipeline(tiny_bert_dir)


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    return pipe.save_pretrained(tmp_path_factory.mktemp("pipeline") / "tiny-model")


@pytest.fixture(scope="module")
def loaded(model_dir):
    return ReportToVolumePipeline.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def result(loaded):
    """One generation at the model's native 8^3 grid."""
    return loaded(REPORT, density=0.8, seed=3, num_inference_steps=2, progress=False)


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def broken_copy(model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


# ------------------------------------------------------------------------------------------- folder


def test_saved_folder_layout(model_dir):
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "ReportToVolumePipeline"
    assert index["_medgen_version"]
    assert index["unet"] == ["medgen.models", "ConditionalUNet"]
    assert set(index["weights_sha256"]) == {
        "text_encoder/model.safetensors", "autoencoder/model.safetensors", "unet/model.safetensors"}
    for name in ("autoencoder/config.json", "unet/config.json", "scheduler/scheduler_config.json",
                 "text_encoder/config.json"):
        assert (model_dir / name).is_file(), name
    assert not list(model_dir.rglob("*.bin")) and not list(model_dir.parent.glob(".*part*"))
    assert json.loads((model_dir / "scheduler/scheduler_config.json").read_text())["name"] == "ddim"


def test_loaded_pipeline_matches_in_memory(pipe, loaded):
    assert loaded.config == json.loads(json.dumps(pipe.config))
    a = pipe(REPORT, density=0.5, seed=1, **FAST)
    b = loaded(REPORT, density=0.5, seed=1, **FAST)
    np.testing.assert_array_equal(a.volume.array, b.volume.array)


def test_fp16_storage_round_trip(pipe, model_dir, tmp_path):
    from safetensors import safe_open

    half = pipe.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    size = lambda d: sum(f.stat().st_size for f in d.rglob("*.safetensors"))  # noqa: E731
    assert size(half) < 0.6 * size(model_dir)
    with safe_open(half / "text_encoder/model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    back = ReportToVolumePipeline.from_pretrained(half)
    for module in (back.unet, back.autoencoder, back.text_encoder):
        assert all(p.dtype == torch.float32 for p in module.parameters())
    ref = pipe.unet.state_dict()
    for key, value in back.unet.state_dict().items():
        torch.testing.assert_close(value, ref[key].half().float(), rtol=0, atol=0)
    a = pipe(REPORT, seed=2, **FAST).volume.array
    b = back(REPORT, seed=2, **FAST).volume.array
    assert np.abs(a - b).mean() < 5.0  # HU; half-precision weights only
    with pytest.raises(ValueError, match="dtype"):
        pipe.save_pretrained(tmp_path / "int8", dtype=torch.int8)


def test_fp16_overflow_is_refused(tmp_path):
    from medgen.io.weights import save_weights

    layer = torch.nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.fill_(1e6)
    with pytest.raises(ValueError, match="weight overflows"):
        save_weights(layer, tmp_path / "w.safetensors", torch.float16)
    assert not (tmp_path / "w.safetensors").exists()


# --------------------------------------------------------------------------------------- generation


def test_volume_geometry_and_values(result):
    volume = result.volume
    assert volume.shape == (8, 8, 8)
    assert volume.spacing == (40.0, 40.0, 40.0)
    assert volume.orientation == "RAS"
    np.testing.assert_allclose(volume.affine, make_affine((8, 8, 8), 40.0))
    np.testing.assert_allclose(volume.world_coordinates([3.5, 3.5, 3.5]), 0.0, atol=1e-9)  # centred
    assert volume.array.dtype == np.float32
    assert np.isfinite(volume.array).all()
    assert volume.array.min() >= -1024.0 and volume.array.max() <= 1024.0
    assert volume.array.std() > 0
    assert tuple(result.latent.shape) == (4, 4, 4, 4)


def test_provenance(result, model_dir):
    prov = result.provenance
    assert result.volume.meta is prov
    assert prov["synthetic"] is True
    assert prov["report"] == REPORT
    assert (prov["density"], prov["seed"], prov["num_inference_steps"]) == (0.8, 3, 2)
    assert (prov["guidance_scale"], prov["density_guidance_scale"]) == (3.0, 2.0)  # tiny.yaml defaults
    assert prov["model_id"] == "tiny" and prov["model_path"] == str(model_dir)
    index = json.loads((model_dir / "model_index.json").read_text())
    assert prov["weights_sha256"] == index["weights_sha256"]
    assert len(prov["model_sha256"]) == 64
    assert prov["device"] == "cpu" and prov["medgen_version"] and prov["created_utc"]
    json.dumps(prov)  # serialisable as is


def test_same_seed_is_bit_identical_and_seeds_differ(loaded):
    a = loaded(REPORT, seed=11, **FAST)
    b = loaded(REPORT, seed=11, **FAST)
    c = loaded(REPORT, seed=12, **FAST)
    np.testing.assert_array_equal(a.volume.array, b.volume.array)
    assert torch.equal(a.latent, b.latent)
    assert not np.array_equal(a.volume.array, c.volume.array)


def test_generator_equals_seed_and_is_recorded(loaded):
    a = loaded(REPORT, seed=5, **FAST)
    b = loaded(REPORT, generator=torch.Generator().manual_seed(5), **FAST)
    np.testing.assert_array_equal(a.volume.array, b.volume.array)
    assert (b.provenance["seed"], b.provenance["seed_source"]) == (5, "generator")
    assert loaded(REPORT, **FAST).provenance["seed"] == 0  # documented default


def test_density_changes_the_volume(loaded):
    none = loaded(REPORT, seed=4, **FAST)
    low = loaded(REPORT, density=0.1, seed=4, **FAST)
    high = loaded(REPORT, density=0.9, seed=4, **FAST)
    assert not np.array_equal(low.volume.array, high.volume.array)
    assert not np.array_equal(none.volume.array, high.volume.array)
    assert none.provenance["density"] is None and none.provenance["density_guidance_scale"] is None


def test_guidance_one_is_the_conditional_prediction_only(loaded):
    """w_t = w_d = 1 runs one branch: the same as a plain DDIM loop on the report + density."""
    from medgen.diffusion import build_scheduler

    out = loaded(REPORT, density=0.7, seed=4, **FAST)
    enc = loaded.text_encoder([REPORT])
    scheduler = build_scheduler(loaded.config["scheduler"])
    scheduler.set_timesteps(2)
    x = torch.randn((1, 4, 4, 4, 4), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = loaded.unet(x, t.reshape(1), token_states=enc.token_states, attention_mask=enc.attention_mask,
                              pooled=enc.pooled, density=torch.tensor([0.7]))
            x, _ = scheduler.step(eps, int(t), x)
    torch.testing.assert_close(out.latent, x[0])
    guided = loaded(REPORT, density=0.7, seed=4, **{**FAST, "guidance_scale": 3.0})
    assert not torch.equal(guided.latent, out.latent)


def test_batch_of_reports(loaded):
    reports = [REPORT, "Normal chest CT."]
    results = loaded(reports, density=[0.3, None], seed=9, **FAST)
    assert isinstance(results, list) and len(results) == 2
    assert [r.provenance["report"] for r in results] == reports
    assert [r.provenance["density"] for r in results] == [0.3, None]
    assert [r.provenance["batch_index"] for r in results] == [0, 1]
    assert all(r.volume.shape == (8, 8, 8) and r.provenance["seed"] == 9 for r in results)
    assert not np.array_equal(results[0].volume.array, results[1].volume.array)
    again = loaded(reports, density=[0.3, None], seed=9, **FAST)
    np.testing.assert_array_equal(again[1].volume.array, results[1].volume.array)


def test_large_latents_are_decoded_in_tiles(loaded, monkeypatch):
    import medgen.pipelines.text_to_volume as module

    calls = []
    real = module.decode_tiled
    monkeypatch.setattr(module, "decode_tiled", lambda *a, **k: calls.append(k) or real(*a, **k))
    latents = torch.randn(1, 4, 8, 8, 8)
    loaded.decode(latents)
    assert not calls  # 8 <= decode_tile (32)
    monkeypatch.setitem(loaded.config, "decode_tile", 4)
    monkeypatch.setitem(loaded.config, "decode_overlap", 2)
    hu = loaded.decode(latents)
    assert calls == [{"tile": 4, "overlap": 2}] and hu.shape == (1, 16, 16, 16)


def test_finer_spacing_keeps_the_field_of_view_and_runs_the_cascade(loaded):
    fast = {k: v for k, v in FAST.items() if k != "shape"}
    native = loaded(REPORT, seed=2, **fast)
    result = loaded(REPORT, spacing=10.0, seed=2, **fast)
    volume = result.volume
    assert volume.shape == (32, 32, 32) and volume.spacing == pytest.approx((10.0,) * 3)
    np.testing.assert_allclose(volume.world_coordinates([15.5, 15.5, 15.5]), 0.0, atol=1e-9)  # same centre
    assert np.array(volume.shape) * np.array(volume.spacing) == pytest.approx([320.0] * 3)  # same FOV
    grid = result.provenance["grid"]
    assert grid["native_shape"] == [8, 8, 8] and grid["fov_mm"] == [320.0] * 3 and len(grid["stages"]) == 3
    assert result.provenance["shape"] == [32, 32, 32] and result.provenance["spacing"] == [10.0] * 3
    # two trilinear stages of the native render: the mean HU is kept, the latent is the native one
    assert abs(volume.array.mean() - native.volume.array.mean()) < 5.0
    torch.testing.assert_close(result.latent, native.latent)
    assert loaded(REPORT, shape=(16, 16, 16), seed=2, **{k: v for k, v in fast.items()}).volume.shape == (16,) * 3


# ------------------------------------------------------------------------------------- bad inputs

BAD_CALLS = [
    ({"report": ""}, "empty"),
    ({"report": "  \n\t "}, "empty"),
    ({"report": "x" * 20_001}, "20000"),
    ({"report": "abc\x00def"}, "NUL"),
    ({"report": "\x01\x02\x03\x04\x05\x06 ab"}, "non-printable"),
    ({"report": 42}, "string"),
    ({"report": []}, "non-empty list"),
    ({"report": [REPORT, ""]}, r"report\[1\]"),
    ({"density": float("nan")}, "density"),
    ({"density": -0.1}, "density"),
    ({"density": 1.5}, "density"),
    ({"density": "dense"}, "density"),
    ({"density": [0.1]}, "1 values for 2|density"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"num_inference_steps": -2}, "num_inference_steps"),
    ({"num_inference_steps": 2.5}, "num_inference_steps"),
    ({"num_inference_steps": True}, "num_inference_steps"),
    ({"num_inference_steps": 5000}, "at most 1000"),
    ({"shape": (15, 16, 16)}, "anisotropic"),
    ({"shape": (12, 12, 12)}, "not reachable"),
    ({"shape": (4, 4, 4)}, "below the model's native grid"),
    ({"shape": (128, 128, 128)}, "not reachable"),
    ({"shape": (0, 16, 16)}, "positive"),
    ({"shape": (16, 16)}, "three"),
    ({"shape": (16.0, 16, 16)}, "three"),
    ({"spacing": 0}, "spacing"),
    ({"spacing": (1.0, 2.0)}, "spacing"),
    ({"spacing": (1.0, float("nan"), 1.0)}, "spacing"),
    ({"spacing": 30.0}, "whole voxels"),
    ({"fov": 400.0}, "field of view"),
    ({"fov": 320.0, "shape": (16,) * 3, "spacing": 20.0}, "at most two"),
    ({"shape": (16,) * 3, "spacing": 10.0}, "covers"),
    ({"guidance_scale": float("nan")}, "guidance_scale"),
    ({"density_guidance_scale": -1.0}, "density_guidance_scale"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": 1, "generator": torch.Generator()}, "either"),
    ({"generator": 3}, "generator"),
]


@pytest.mark.parametrize("kwargs, message", BAD_CALLS, ids=[str(i) for i in range(len(BAD_CALLS))])
def test_bad_inputs_raise_one_clear_error(loaded, kwargs, message):
    kwargs = {"report": REPORT, **kwargs}
    if "density" in kwargs and isinstance(kwargs["density"], list):
        kwargs["report"] = [REPORT, REPORT]
    with pytest.raises((ValueError, MedgenError), match=message) as info:
        loaded.check_inputs(**kwargs)
    assert "\n" not in str(info.value)
    with pytest.raises((ValueError, MedgenError)):  # __call__ checks before any work
        loaded(progress=False, **kwargs)


def test_unknown_device(model_dir, loaded):
    with pytest.raises(ValueError, match="device"):
        ReportToVolumePipeline.from_pretrained(model_dir, device="tpu")
    with pytest.raises(ValueError, match="device"):
        loaded.to("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            loaded.to("cuda")


def test_report_file_checks(tmp_path):
    from medgen.pipelines.validation import read_report_file

    good = tmp_path / "zh.txt"
    good.write_bytes("\ufeff右肺上叶见一磨玻璃结节，直径约12毫米。\n".encode())
    assert read_report_file(good).startswith("右肺上叶")
    cases = {
        "missing.txt": None,
        "empty.txt": b"  \n",
        "nul.txt": b"lung\x00\x00\x01",
        "latin1.txt": "Épanchement pleural".encode("latin-1"),
        "huge.txt": b"a" * 100_000,
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(InputFileError, match=name) as info:
            read_report_file(path)
        assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------- broken models


def test_mismatched_components_are_refused(pipe):
    from monai.networks.schedulers import DDIMScheduler

    from medgen.models import ConditionalUNet

    other = ConditionalUNet(**{**pipe.unet.config, "cross_attention_dim": 16, "pooled_dim": 16})
    with pytest.raises(MedgenError, match="different models"):
        ReportToVolumePipeline(pipe.text_encoder, pipe.autoencoder, other, pipe.scheduler, config=pipe.config)
    with pytest.raises(ValueError, match="autoencoder"):
        ReportToVolumePipeline(pipe.text_encoder, pipe.autoencoder, pipe.unet, pipe.scheduler, config={})
    config = {k: v for k, v in pipe.config.items() if k != "scheduler"}
    with pytest.raises(ValueError, match="build_scheduler"):
        ReportToVolumePipeline(pipe.text_encoder, pipe.autoencoder, pipe.unet, DDIMScheduler(), config=config)


def test_missing_model_folder_and_index(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        ReportToVolumePipeline.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        ReportToVolumePipeline.from_pretrained(tmp_path / "empty")


def test_missing_component(model_dir, tmp_path):
    broken = broken_copy(model_dir, tmp_path)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ModelNotFoundError, match="unet"):
        ReportToVolumePipeline.from_pretrained(broken)


@pytest.mark.parametrize("name", ["model_index.json", "unet/config.json", "scheduler/scheduler_config.json"])
def test_corrupt_json(model_dir, tmp_path, name):
    broken = broken_copy(model_dir, tmp_path)
    (broken / name).write_text('{"_class_name": "ReportToVolumePipeline", ')
    with pytest.raises(InputFileError, match="corrupt JSON") as info:
        ReportToVolumePipeline.from_pretrained(broken)
    assert name in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("component", ["unet", "autoencoder", "text_encoder"])
def test_pickle_weights_are_refused_unopened(model_dir, tmp_path, component):
    broken = broken_copy(model_dir, tmp_path)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (broken / component / "model.safetensors").unlink()
    (broken / component / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(InputFileError, match="pickle"):
        ReportToVolumePipeline.from_pretrained(broken)
    assert not marker.exists()


def test_garbage_and_tampered_weights(model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = broken_copy(model_dir, tmp_path)
    weights = broken / "unet" / "model.safetensors"
    state = load_file(weights)
    weights.write_bytes(b"\x89GARBAGE" * 100)
    with pytest.raises(InputFileError, match="not a valid safetensors"):
        ReportToVolumePipeline.from_pretrained(broken)
    save_file({k: torch.zeros_like(v) for k, v in state.items()}, weights)
    with pytest.raises(InputFileError, match="sha256 does not match"):
        ReportToVolumePipeline.from_pretrained(broken)


def test_default_model_location(monkeypatch, tmp_path):
    import medgen.pipelines.default_model as default_model

    assert default_model.default_model_path().parts[-3:] == ("medgen", "assets", "default-model")
    monkeypatch.setattr(default_model, "default_model_path", lambda: tmp_path / "default-model")
    with pytest.raises(ModelNotFoundError, match="default model is not installed.*--model"):
        default_model.resolve_model_path(None)
    assert default_model.resolve_model_path("x/y") == Path("x/y")


def test_import_medgen_stays_light():
    import medgen

    code = "import sys, medgen; assert 'torch' not in sys.modules, 'import medgen loaded torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert medgen.ReportToVolumePipeline is ReportToVolumePipeline  # lazy attribute


# ------------------------------------------------------------------------------------------ saving


def test_save_writes_labelled_nifti_sidecar_and_preview(result, tmp_path):
    from PIL import Image

    written = result.save(tmp_path / "out" / "ct.nii.gz")
    assert set(written) == {"nifti", "sidecar", "preview"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct.json", "ct.nii.gz", "ct.png"]
    img = nib.load(written["nifti"])
    assert img.get_data_dtype() == np.int16
    assert img.header["descrip"].item().startswith(b"SYNTHETIC")
    np.testing.assert_allclose(img.affine, result.volume.affine)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.rint(result.volume.array).astype(np.int16))
    sidecar = json.loads(written["sidecar"].read_text(encoding="utf-8"))
    for key in ("report", "density", "seed", "num_inference_steps", "guidance_scale", "density_guidance_scale",
                "model_id", "model_sha256", "medgen_version", "created_utc", "device"):
        assert key in sidecar, key
    assert sidecar["synthetic"] is True and sidecar["seed"] == 3
    with Image.open(written["preview"]) as png:
        assert png.format == "PNG" and png.width > png.height > 32


def test_save_refuses_existing_outputs_before_any_work(result, tmp_path):
    out = tmp_path / "ct.nii.gz"
    (tmp_path / "ct.png").write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="ct.png"):
        result.save(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.png"]
    result.save(out, overwrite=True)
    assert (tmp_path / "ct.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="nii"):
        result.save(tmp_path / "ct.mha")


def test_failed_save_leaves_nothing(result, tmp_path, monkeypatch):
    import medgen.pipelines.result as module

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, "write_dicom_series", boom)
    with pytest.raises(RuntimeError):
        result.save(tmp_path / "new" / "ct.nii.gz", dicom_dir=tmp_path / "dicom")
    assert list(tmp_path.iterdir()) == []


def test_save_with_dicom_series(result, tmp_path):
    from medgen.io.dicom import read_dicom_series

    written = result.save(tmp_path / "ct.nii.gz", dicom_dir=tmp_path / "series", preview=False)
    assert not (tmp_path / "ct.png").exists()
    series = read_dicom_series(written["dicom"])
    assert series.shape == result.volume.shape
    np.testing.assert_allclose(series.affine, result.volume.affine, atol=1e-4)
    np.testing.assert_allclose(series.array, np.rint(result.volume.array), atol=0.5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_overwrite_never_replaces_a_folder_that_is_not_a_series(result, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(MedgenError, match="must not contain"):
        result.save(tmp_path / "mine" / "ct.nii.gz", dicom_dir=tmp_path / "mine", overwrite=True)
    with pytest.raises(MedgenError, match="more than a DICOM series"):
        result.save(tmp_path / "ct.nii.gz", dicom_dir=tmp_path / "mine", overwrite=True)
    assert files(tmp_path) == ["mine", "mine/notes.txt"]
