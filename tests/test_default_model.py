"""The embedded default model ships inside the package and generates offline with no `--model`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medgen import default_model_path
from medgen.pipelines import ReportToVolumePipeline

MAX_MB = 80


@pytest.fixture(scope="module")
def default_pipe():
    return ReportToVolumePipeline.from_pretrained(default_model_path())


def test_weights_are_safetensors_within_budget_with_a_model_card():
    folder = default_model_path()
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= MAX_MB * 2**20
    suffixes = {f.suffix for f in files}
    assert ".safetensors" in suffixes and not suffixes & {".bin", ".pt", ".pth", ".pkl", ".ckpt"}
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    for item in ("Synthetic research data only", "float16", "Hardware", "ldm training"):
        assert item in card
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    assert index["config"]["shape"] == [64, 64, 64] and index["config"]["spacing"] == [5.0, 5.0, 5.0]


def test_default_model_generates_a_chest_from_a_report(default_pipe):
    result = default_pipe("Large right pleural effusion. No pulmonary nodule.", seed=0, num_inference_steps=10,
                          progress=False)
    volume = result.volume
    assert volume.shape == (64, 64, 64)
    np.testing.assert_allclose(volume.spacing, (5.0, 5.0, 5.0))
    hu = np.asarray(volume.array)
    assert np.isfinite(hu).all() and -1024 <= hu.min() and hu.max() <= 1024
    # a thorax, not noise: air outside the body, lungs well below soft tissue, soft tissue around them
    corners = hu[:4, :4, :].mean()
    centre = hu[24:40, 24:40, 24:40]
    assert corners < -800
    assert (hu < -500).mean() > 0.2 and (hu > -200).mean() > 0.2
    assert centre.mean() > -400  # mediastinum / heart at the centre
    assert result.provenance["seed"] == 0 and result.provenance["num_inference_steps"] == 10
