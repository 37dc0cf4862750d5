"""`ReportReader` with a tiny locally built encoder: save/load, windows, training loop, CLI and pipeline
integration, and that the generation path never imports the rule parser."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from medgen.cli.main import main as cli_main
from medgen.errors import InputFileError, ModelNotFoundError
from medgen.reader import ReportReader
from medgen.reader.labels import LABELS

LONG = " ".join(["Heart size is normal. Mediastinal lymph nodes are not enlarged."] * 40) + \
    " There is a 12 mm solid nodule in the right upper lobe."


@pytest.fixture(scope="module")
def tiny_reader(tiny_bert_dir):
    torch.manual_seed(0)
    return ReportReader.from_text_encoder(tiny_bert_dir, window=32, stride=10).eval()


@pytest.fixture(scope="module")
def tiny_reader_dir(tiny_reader, tmp_path_factory):
    return tiny_reader.save_pretrained(tmp_path_factory.mktemp("reader") / "reader")


def test_save_and_load_give_the_same_tags(tiny_reader, tiny_reader_dir):
    loaded = ReportReader.from_pretrained(tiny_reader_dir)
    assert (loaded.window, loaded.stride) == (32, 10)
    a, b = tiny_reader.tag(["RUL: 12 mm solid nodule."])[0], loaded.tag(["RUL: 12 mm solid nodule."])[0]
    assert np.allclose(a[0], b[0], atol=1e-6) and a[1] == b[1]
    assert sorted(p.name for p in tiny_reader_dir.iterdir()) == ["encoder", "head.safetensors", "reader_config.json"]


def test_missing_or_foreign_reader_folder(tmp_path, tiny_reader_dir):
    with pytest.raises(ModelNotFoundError, match="no report reader"):
        ReportReader.from_pretrained(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((tiny_reader_dir / "reader_config.json").read_text())
    (broken / "reader_config.json").write_text(json.dumps({**config, "labels": ["les"]}))
    with pytest.raises(InputFileError, match="another tag set"):
        ReportReader.from_pretrained(broken)


def test_windows_cover_a_long_report_with_overlap(tiny_reader):
    ids, offsets = tiny_reader.tokenize(LONG)
    windows = tiny_reader.windows(len(ids))
    assert len(windows) > 1 and windows[0][0] == 0 and windows[-1][1] == len(ids)
    assert all(b[0] < a[1] for a, b in zip(windows, windows[1:], strict=False))  # overlapping
    assert all(end - start == tiny_reader.window - 2 for start, end in windows)
    probs, tag_offsets, n_windows = tiny_reader.tag([LONG])[0]
    assert probs.shape == (len(ids), len(LABELS)) and n_windows == len(windows) and tag_offsets == offsets
    # each token is taken from a window where it has context on both sides when one exists
    single = tiny_reader.tag([LONG[-60:]])[0][0]
    assert single.shape[1] == len(LABELS)


def test_read_rejects_empty_reports(tiny_reader):
    with pytest.raises(ValueError, match="non-empty"):
        tiny_reader.read("   ")


def test_training_lowers_the_loss_and_saves_a_loadable_reader(tiny_bert_dir, tmp_path):
    from medgen.reader.train import ReaderTrainConfig, train_reader

    summary = train_reader(ReaderTrainConfig(encoder=str(tiny_bert_dir), out=str(tmp_path / "r"), n_train=120,
                                             n_val=12, steps=40, batch_size=8, lr=3e-3, warmup=5, window=64,
                                             log_every=10), progress=False)
    losses = [h["loss"] for h in summary["history"]]
    assert losses[-1] < 0.85 * losses[0]
    assert "all_correct" in summary["val_scores_training_families"]
    assert ReportReader.from_pretrained(tmp_path / "r").window == 64


def test_cli_read_prints_findings_json(tiny_reader_dir, tmp_path, capsys):
    out = tmp_path / "f.json"
    assert cli_main(["read", "--report", "RUL: 12 mm solid nodule.", "--reader", str(tiny_reader_dir),
                     "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["schema_version"] == 1 and json.loads(out.read_text()) == printed
    assert cli_main(["read", "--report", "x", "--reader", str(tiny_reader_dir), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli_main(["read", "--report", "  ", "--reader", str(tiny_reader_dir)]) == 2
    assert "empty" in capsys.readouterr().err
    assert cli_main(["read", "--report", "x", "--reader", str(tmp_path / "nowhere")]) == 2
    assert "no report reader" in capsys.readouterr().err


def test_pipeline_saves_loads_and_records_the_reader(tiny_pipeline_dir, tiny_reader, tmp_path):
    from medgen.pipelines import ReportToVolumePipeline

    pipe = ReportToVolumePipeline.from_pretrained(tiny_pipeline_dir)
    assert pipe.reader is None
    pipe.reader = tiny_reader
    folder = pipe.save_pretrained(tmp_path / "with-reader")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["reader"] == ["medgen.reader", "ReportReader"]
    assert "reader/head.safetensors" in index["weights_sha256"]
    loaded = ReportToVolumePipeline.from_pretrained(folder)
    assert isinstance(loaded.reader, ReportReader)
    result = loaded("A 12 mm solid nodule in the right upper lobe.", num_inference_steps=1, progress=False)
    assert result.provenance["findings"]["schema_version"] == 1
    assert isinstance(result.provenance["reader_warnings"], list)
    (folder / "reader" / "head.safetensors").write_bytes(b"corrupt")
    with pytest.raises(InputFileError, match="sha256|safetensors"):
        ReportToVolumePipeline.from_pretrained(folder)


def test_generation_path_never_imports_the_rule_parser():
    code = ("import sys, medgen, medgen.pipelines, medgen.reader, medgen.cli.generate, medgen.cli.read; "
            "bad = [m for m in sys.modules if m == 'medgen.reports.rule_parser']; print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
