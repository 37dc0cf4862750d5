"""Offline loading of Hugging Face encoders: a local folder or the HF cache, safetensors only.

A missing model raises `ModelNotFoundError` with one sentence saying where it looked and how to get it;
a broken folder raises `InputFileError` naming it. Nothing is downloaded and nothing is unpickled
(Bio_ClinicalBERT's safetensors weights are in its hub revision refs/pr/6; its main branch has a pickle).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from medgen.errors import InputFileError, ModelNotFoundError

DEFAULT_TEXT_ENCODER = "emilyalsentzer/Bio_ClinicalBERT"

def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment now (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _download_hint(name: str) -> str:
    """The command that fetches safetensors weights (Bio_ClinicalBERT's main branch has only a pickle)."""
    if name == DEFAULT_TEXT_ENCODER:  # its safetensors variant lives in the hub PR refs/pr/6
        return (f"`huggingface-cli download {name} config.json vocab.txt model.safetensors "
                "--revision refs/pr/6 --local-dir DIR`")
    return f"`huggingface-cli download {name} --local-dir DIR` (it must include model.safetensors)"


def _not_found(name: str) -> ModelNotFoundError:
    folder = Path(name).expanduser().resolve()
    hub_id = bool(_HUB_ID.match(name))
    where = f"no folder {folder}" + (f" and no copy in the Hugging Face cache {hf_cache_dir()}" if hub_id else "")
    return ModelNotFoundError(
        f"text encoder {name!r} not found ({where}; medgen never downloads): on a machine with internet run "
        f"{_download_hint(name if hub_id else DEFAULT_TEXT_ENCODER)}, copy DIR here and pass it as the encoder "
        "path, or build a compact offline encoder with `medgen text pretrain --manifest MANIFEST --out DIR`"
    )


def load_hf_encoder(name: str, do_lower_case: bool | None):
    """Load (tokenizer, model) from a local folder or the HF cache; offline, safetensors only."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(name).expanduser()
    from_cache = not folder.exists()
    if from_cache and not _HUB_ID.match(name):
        raise _not_found(name)
    if not from_cache:
        if not (folder / "config.json").is_file():
            raise InputFileError(folder, "not a Hugging Face model folder (no config.json)")
        if not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin")):
            raise InputFileError(folder, "has pickle weights only (*.bin) and medgen loads safetensors only: get "
                                         f"model.safetensors, e.g. {_download_hint(DEFAULT_TEXT_ENCODER)}")
    source = name if from_cache else str(folder)
    kwargs = {"cache_dir": str(hf_cache_dir())} if from_cache else {}
    if do_lower_case is None and "bio_clinicalbert" in name.lower():
        do_lower_case = False  # the model is cased; its tokenizer config says otherwise
    tok_kwargs = kwargs if do_lower_case is None else {**kwargs, "do_lower_case": do_lower_case}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, **tok_kwargs)
        model = AutoModel.from_pretrained(source, local_files_only=True, use_safetensors=True, **kwargs)
    except OSError as err:
        if from_cache:  # not in the cache, an incomplete snapshot, or pickle weights only
            raise _not_found(name) from err
        raise InputFileError(folder, f"cannot load the text encoder: {_first_line(err)}") from err
    except Exception as err:  # corrupt weights, bad JSON, unknown architecture...
        raise InputFileError(source, f"cannot load the text encoder ({type(err).__name__}: {_first_line(err)})") from err
    n_special = len(set(tokenizer.all_special_ids))
    if len(tokenizer) <= n_special or len(tokenizer) > model.config.vocab_size:
        raise InputFileError(
            source, f"tokenizer vocabulary ({len(tokenizer)} tokens) does not fit the model "
            f"(vocab_size {model.config.vocab_size}); the folder is incomplete or mixes two models"
        )
    return tokenizer, model


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no details"
