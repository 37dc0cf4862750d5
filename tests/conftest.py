"""Shared pytest fixtures (tiny models built locally; tests never download anything)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """Folder with a tiny random BERT (hidden 32, 2 layers) + EN/ZH WordPiece tokenizer, built once per session."""
    from medgen.text.tiny import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))
