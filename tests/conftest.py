"""Shared pytest fixtures (tiny models built locally; tests never download anything)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """Folder with a tiny random BERT (hidden 32, 2 layers) + EN/ZH WordPiece tokenizer, built once per session."""
    from medgen.text.tiny import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory):
    """A tiny synthetic dataset (6 phantoms, 32^3 at 10 mm: 5 train + 1 val), built once per session."""
    from medgen.dataset.builder import build_synthetic_dataset

    return build_synthetic_dataset(tmp_path_factory.mktemp("tiny_data") / "data", n=6, shape=32, spacing=10.0,
                                   seed=0, val_fraction=0.2, test_fraction=0.0, workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tiny_bert_dir, tmp_path_factory):
    """A saved, untrained pipeline from configs/tiny.yaml (32^3 at 10 mm) with the tiny BERT, built once per session.

    The zero-initialised condition embedding is randomised (as in test_pipeline.py) so that density and
    pooled text change the output.
    """
    from pathlib import Path

    import torch
    import yaml

    from medgen.pipelines.build import build_pipeline
    from medgen.text import TextEncoder

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml").read_text())
    torch.manual_seed(0)
    pipe = build_pipeline(config, TextEncoder.from_pretrained(tiny_bert_dir))
    with torch.no_grad():
        for param in pipe.unet.condition_embedding.parameters():
            param.normal_(0.0, 0.5)
    return pipe.save_pretrained(tmp_path_factory.mktemp("tiny_pipeline") / "tiny-model")


@pytest.fixture(scope="session")
def tiny_layout_config():
    """configs/tiny.yaml turned layout-grounded: SPADE autoencoder and a UNet joining the layout channels."""
    from pathlib import Path

    import yaml

    from medgen.layout import N_CHANNELS

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml").read_text())
    config["autoencoder"].update(label_nc=N_CHANNELS, spade_intermediate_channels=8)
    config["unet"]["layout_channels"] = N_CHANNELS
    return config


@pytest.fixture(scope="session")
def tiny_layout_model_dir(tiny_layout_config, tiny_bert_dir, tmp_path_factory):
    """A saved, untrained layout-grounded pipeline (32^3 at 10 mm), built once per session."""
    import copy

    import torch

    from medgen.pipelines.build import build_pipeline
    from medgen.text import TextEncoder

    torch.manual_seed(0)
    pipe = build_pipeline(copy.deepcopy(tiny_layout_config), TextEncoder.from_pretrained(tiny_bert_dir))
    return pipe.save_pretrained(tmp_path_factory.mktemp("layout_model") / "model")
