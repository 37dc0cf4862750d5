"""Layout-grounded rendering with tiny networks: SPADE autoencoder, UNet with joined layout channels, the
pipeline's layout step and outputs (CT + label map + findings JSON), `--findings` / `--layout` in the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen.cli.main import main as cli_main
from medgen.layout import N_CHANNELS
from medgen.models.autoencoder import autoencode, build_autoencoder, decode_latents, is_layout_aware

FINDINGS = {"lesions": [{"lobe": "right_lower", "diameter_mm": 30.0, "type": "solid"}],
            "effusion": {"side": "left", "grade": "large"}}


def test_spade_autoencoder_needs_and_uses_the_layout(tiny_layout_config):
    ae = build_autoencoder(tiny_layout_config["autoencoder"])
    assert is_layout_aware(ae)
    x = torch.zeros(1, 1, 16, 16, 16)
    layout = torch.zeros(1, N_CHANNELS, 16, 16, 16)
    with pytest.raises(ValueError, match="layout-aware"):
        autoencode(ae, x)
    recon, mu, _ = autoencode(ae, x, layout)
    assert recon.shape == x.shape and mu.shape[2:] == (8, 8, 8)
    other = layout.clone()
    other[:, 5] = 1.0
    other[:, -1] = 1.0
    with torch.no_grad():
        a, b = decode_latents(ae, mu, layout), decode_latents(ae, mu, other)
    assert not torch.allclose(a, b)  # the decoder reads the layout
    with pytest.raises(ValueError, match="unknown autoencoder"):
        build_autoencoder({"label_nc": 3, "colour": 1})


def test_unet_joins_layout_channels(tiny_layout_config):
    from medgen.models import ConditionalUNet

    unet_cfg = tiny_layout_config["unet"]
    unet = ConditionalUNet(**unet_cfg, cross_attention_dim=8, pooled_dim=8)
    assert unet.config["layout_channels"] == N_CHANNELS and unet.config["in_channels"] == 4
    kwargs = dict(token_states=torch.zeros(1, 3, 8), attention_mask=torch.ones(1, 3), pooled=torch.zeros(1, 8),
                  density=None)
    x = torch.zeros(1, 4, 8, 8, 8)
    assert unet(x, torch.tensor([10]), layout=torch.zeros(1, N_CHANNELS, 8, 8, 8), **kwargs).shape == x.shape
    with pytest.raises(ValueError, match="joins 9 layout channels"):
        unet(x, torch.tensor([10]), **kwargs)
    text_only = ConditionalUNet(**{k: v for k, v in unet_cfg.items() if k != "layout_channels"},
                                cross_attention_dim=8, pooled_dim=8)
    assert "layout_channels" not in text_only.config
    with pytest.raises(ValueError, match="text-only"):
        text_only(x, torch.tensor([10]), layout=torch.zeros(1, N_CHANNELS, 8, 8, 8), **kwargs)


@pytest.fixture(scope="module")
def layout_model_dir(tiny_layout_model_dir):
    return tiny_layout_model_dir


@pytest.fixture(scope="module")
def layout_pipe(layout_model_dir):
    from medgen.pipelines import ReportToVolumePipeline

    return ReportToVolumePipeline.from_pretrained(layout_model_dir)


def test_pipeline_renders_from_a_layout_and_returns_it(layout_pipe, tmp_path):
    from medgen.findings import Findings

    assert layout_pipe.layout_grounded
    result = layout_pipe(findings=Findings.from_dict(FINDINGS), seed=1, num_inference_steps=2, progress=False)
    labels = np.asarray(result.labels.array)
    assert labels.shape == result.volume.shape == (32, 32, 32)
    np.testing.assert_allclose(result.labels.affine, result.volume.affine)
    assert (labels == 20).sum() > 0 and result.findings.lesions[0].center_mm is not None
    assert result.provenance["layout"]["label_table"]["lesion_1"] == 20
    assert "right lower lobe" in result.provenance["report"].lower()  # text condition written from the findings
    again = layout_pipe(findings=Findings.from_dict(FINDINGS), seed=1, num_inference_steps=2, progress=False)
    assert np.array_equal(again.labels.array, labels) and np.array_equal(again.volume.array, result.volume.array)
    written = result.save(tmp_path / "ct.nii.gz")
    assert written["labels"].name == "ct_labels.nii.gz" and written["findings"].name == "ct_findings.json"
    import nibabel as nib

    saved = nib.load(written["labels"])
    assert np.array_equal(np.asarray(saved.dataobj), labels)
    np.testing.assert_allclose(saved.affine, nib.load(written["nifti"]).affine)
    assert json.loads(written["findings"].read_text())["lesions"][0]["lobe"] == "right_lower"


def test_user_layout_is_rendered_as_given(layout_pipe):
    from medgen.findings import Findings

    first = layout_pipe(findings=Findings.from_dict(FINDINGS), seed=2, num_inference_steps=1, progress=False)
    again = layout_pipe(findings=Findings.from_dict(FINDINGS), layout=first.labels, seed=5, num_inference_steps=1,
                        progress=False)
    assert np.array_equal(again.labels.array, first.labels.array)
    assert again.provenance["layout"]["anatomy"] == {"source": "user"}


def test_layout_inputs_are_refused_by_a_text_only_model(tiny_pipeline_dir):
    from medgen.pipelines import ReportToVolumePipeline

    pipe = ReportToVolumePipeline.from_pretrained(tiny_pipeline_dir)
    with pytest.raises(ValueError, match="text-only"):
        pipe("x", findings=FINDINGS, num_inference_steps=1, progress=False)


def test_cli_findings_and_layout(layout_model_dir, tmp_path, capsys):
    findings = tmp_path / "f.json"
    findings.write_text(json.dumps(FINDINGS))
    out = tmp_path / "a.nii.gz"
    assert cli_main(["generate", "--findings", str(findings), "--model", str(layout_model_dir), "--out", str(out),
                     "--steps", "1", "--no-preview"]) == 0
    assert (tmp_path / "a_labels.nii.gz").is_file() and (tmp_path / "a_findings.json").is_file()
    capsys.readouterr()
    out2 = tmp_path / "b.nii.gz"
    assert cli_main(["generate", "--findings", str(findings), "--layout", str(tmp_path / "a_labels.nii.gz"),
                     "--model", str(layout_model_dir), "--out", str(out2), "--steps", "1", "--no-preview"]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"lesions": [{"lobe": "middle", "diameter_mm": 3, "type": "solid"}]}')
    capsys.readouterr()
    assert cli_main(["generate", "--findings", str(bad), "--model", str(layout_model_dir),
                     "--out", str(tmp_path / "c.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medgen: error:") and "lobe" in err and not (tmp_path / "c.nii.gz").exists()
    assert cli_main(["generate", "--findings", str(findings), "--layout", str(tmp_path / "nope.nii.gz"),
                     "--model", str(layout_model_dir), "--out", str(tmp_path / "d.nii.gz")]) == 2
    assert "layout file not found" in capsys.readouterr().err
    from medgen.io import load_nifti, save_nifti
    from medgen.volume import Volume

    small = load_nifti(tmp_path / "a_labels.nii.gz")
    save_nifti(Volume(np.asarray(small.array)[:16, :16, :16], small.affine), tmp_path / "small.nii.gz", dtype=np.uint8)
    assert cli_main(["generate", "--findings", str(findings), "--layout", str(tmp_path / "small.nii.gz"),
                     "--model", str(layout_model_dir), "--out", str(tmp_path / "e.nii.gz"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "not the output grid" in err and not (tmp_path / "e.nii.gz").exists()


def test_layout_model_refuses_what_it_cannot_do(layout_model_dir):
    """A layout model with no reader needs findings; a user label map is rendered on the native grid only."""
    from medgen.pipelines import ReportToVolumePipeline

    pipe = ReportToVolumePipeline.from_pretrained(layout_model_dir)
    with pytest.raises(ValueError, match="no report reader"):
        pipe("A 2 cm nodule in the RUL.", num_inference_steps=1, progress=False)
    native = tuple(pipe.config["shape"])
    layout = pipe(findings=FINDINGS, num_inference_steps=1, progress=False).labels
    with pytest.raises(ValueError, match="native grid"):
        pipe(findings=FINDINGS, layout=layout, shape=tuple(2 * s for s in native), num_inference_steps=1,
             progress=False)
    with pytest.raises(ValueError, match="empty|report"):
        pipe(num_inference_steps=1, progress=False)


def test_layout_model_cascade_keeps_labels_on_the_output_grid(layout_model_dir):
    """At twice the native grid the label map follows the CT: same affine, each native label in a 2^3 block."""
    from medgen.pipelines import ReportToVolumePipeline

    pipe = ReportToVolumePipeline.from_pretrained(layout_model_dir)
    native = pipe(findings=FINDINGS, seed=1, num_inference_steps=1, progress=False)
    fine = pipe(findings=FINDINGS, seed=1, shape=tuple(2 * s for s in pipe.config["shape"]), num_inference_steps=1,
                progress=False)
    assert fine.volume.shape == fine.labels.shape == tuple(2 * s for s in native.volume.shape)
    np.testing.assert_allclose(fine.labels.affine, fine.volume.affine)
    np.testing.assert_array_equal(np.asarray(fine.labels.array)[::2, ::2, ::2], np.asarray(native.labels.array))
    np.testing.assert_array_equal(np.asarray(fine.labels.array)[1::2, 1::2, 1::2], np.asarray(native.labels.array))
    assert fine.volume.spacing == pytest.approx(tuple(s / 2 for s in native.volume.spacing))


def test_layout_model_with_a_reader_generates_from_report_text(layout_model_dir, tiny_bert_dir, tmp_path):
    """Reader + layout in one call used to pass `findings` twice to the provenance (TypeError)."""
    from medgen.pipelines import ReportToVolumePipeline
    from medgen.reader import ReportReader

    pipe = ReportToVolumePipeline.from_pretrained(layout_model_dir)
    pipe.reader = ReportReader.from_text_encoder(tiny_bert_dir, window=32).eval()
    with pytest.warns(UserWarning):
        result = pipe("Quarterly budget meeting on Thursday.", seed=0, num_inference_steps=1, progress=False)
    assert result.provenance["reader_warnings"] and result.provenance["layout"]["label_table"]["body"] == 1
    assert result.provenance["findings"] == result.findings.to_dict()


def test_dicom_out_writes_the_label_map_as_a_seg_on_the_ct_series(layout_pipe, tmp_path):
    """--dicom-out: the layout is also a DICOM SEG referencing the CT slices; a standard reader (highdicom)
    opens it and its segments hold the label map; the CT series still reads back alone."""
    import highdicom as hd
    import pydicom

    from medgen.findings import Findings
    from medgen.io import read_dicom_series
    from medgen.io.dicom_seg import SEG_NAME

    result = layout_pipe(findings=Findings.from_dict(FINDINGS), seed=2, num_inference_steps=1, progress=False)
    written = result.save(tmp_path / "ct.nii.gz", dicom_dir=tmp_path / "dicom", preview=False)
    seg = hd.seg.segread(written["dicom"] / SEG_NAME)
    ct_first = pydicom.dcmread(written["dicom"] / "slice_0001.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_first.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == ct_first.FrameOfReferenceUID and seg.PatientID == "SYNTHETIC"
    names = {d.SegmentLabel: d.SegmentNumber for d in seg.SegmentSequence}
    assert {"body", "lesion_1", "effusion"} <= set(names)
    table = result.provenance["layout"]["label_table"]
    ct = read_dicom_series(written["dicom"])  # the SEG beside the slices is skipped
    np.testing.assert_allclose(ct.affine, result.volume.affine, atol=1e-3)
    lesion = seg.get_volume(segment_numbers=[names["lesion_1"]], combine_segments=False).array[..., 0]
    truth = np.asarray(result.labels.array) == table["lesion_1"]
    assert lesion.sum() == truth.sum() > 0
    seg_volume = seg.get_volume(segment_numbers=[names["lesion_1"]], combine_segments=False)
    seg_centroid = seg_volume.affine @ np.append(np.argwhere(seg_volume.array[..., 0]).mean(0), 1.0)
    ours = result.labels.affine @ np.append(np.argwhere(truth).mean(0), 1.0)
    np.testing.assert_allclose(seg_centroid[:3] * [-1, -1, 1], ours[:3], atol=1e-3)  # LPS -> RAS
