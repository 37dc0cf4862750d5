"""Training the layout-grounded model end to end on a tiny dataset: layouts written for the set, a SPADE VAE
(finding-weighted L1), latents cached with their pooled layouts, an LDM joining them, and an exported
pipeline with its anatomy bank that generates a CT with its label map."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from test_training import one_thread  # noqa: F401  (autouse: tiny networks run faster on one thread)

from medgen.layout import N_CHANNELS

pytestmark = pytest.mark.filterwarnings("ignore:.*longer than max_length:UserWarning")


@pytest.fixture(scope="module")
def layout_manifest(tiny_manifest, tmp_path_factory):
    from medgen.dataset.layouts import add_layouts

    root = tmp_path_factory.mktemp("layout_data") / "data"
    shutil.copytree(tiny_manifest.parent, root)
    return add_layouts(root / tiny_manifest.name, shape=32, spacing=10.0, progress=False)


def test_layout_model_trains_and_generates(layout_manifest, tiny_bert_dir, tmp_path):
    from test_training import tiny_config

    from medgen.pipelines import ReportToVolumePipeline
    from medgen.training import train_ldm, train_vae
    from medgen.training.latents import LatentDataset, cache_latents
    from medgen.training.vae import finding_weights

    config = tiny_config(tmp_path / "run", layout_manifest, tiny_bert_dir, "train_vae.steps=2",
                         f"autoencoder.label_nc={N_CHANNELS}", "autoencoder.spade_intermediate_channels=8",
                         "train_vae.finding_weight=4.0", f"unet.layout_channels={N_CHANNELS}",
                         "layout.bank_subjects=4", "layout.k=2")
    vae_dir = train_vae(config, device="cpu", progress=False)
    assert (vae_dir / "model.safetensors").is_file()
    latents = LatentDataset(cache_latents(config, device="cpu", progress=False), "train")
    item = latents[0]
    assert item["layout"].shape == (N_CHANNELS, *item["latent"].shape[1:])
    assert 0.0 <= float(item["layout"][:-1].min()) and float(item["layout"][:-1].max()) <= 1.0
    pipeline_dir = train_ldm(config, device="cpu", progress=False)
    assert (pipeline_dir / "anatomy_bank" / "anatomy_bank.json").is_file()
    pipe = ReportToVolumePipeline.from_pretrained(pipeline_dir)
    assert pipe.layout_grounded and len(pipe.anatomy_bank) == 4
    result = pipe("Large left pleural effusion.", findings={"effusion": {"side": "left", "grade": "large"}},
                  seed=0, num_inference_steps=2, progress=False)
    assert result.provenance["layout"]["anatomy"]["source"] == "bank"
    assert (np.asarray(result.labels.array) == 9).sum() > 0  # effusion laid out
    layout = torch.zeros(1, N_CHANNELS, 2, 2, 2)
    layout[0, 5, 0, 0, 0] = 1.0
    weights = finding_weights(layout, 4.0)
    assert float(weights.max()) == 5.0 and float(weights.min()) == 1.0
