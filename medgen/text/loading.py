"""Build a text encoder (single or SDXL-style dual) from a config section.

Lives above `encoder` and `dual`, so that both import downwards only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medgen.text.dual import DualTextEncoder
from medgen.text.encoder import DEFAULT_TEXT_ENCODER, TextEncoder, read_encoder_config


def load_text_encoder(config: dict) -> torch.nn.Module:
    """Build the encoder described by a config section (e.g. `text_encoder:` in a YAML experiment).

    Keys: name_or_path, max_length, pooling, trainable_layers, cache_size, do_lower_case, and
    `second: {...}` (same keys) for an SDXL-style dual encoder. A folder written by
    `DualTextEncoder.save_pretrained` is recognised by itself.
    """
    known = {"name_or_path", "max_length", "pooling", "trainable_layers", "cache_size", "do_lower_case", "second"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown text encoder config keys {unknown}; expected some of {sorted(known)}")
    options = {k: v for k, v in config.items() if k not in ("name_or_path", "second")}
    name = str(config.get("name_or_path", DEFAULT_TEXT_ENCODER))
    if read_encoder_config(Path(name).expanduser()).get("dual"):
        return DualTextEncoder.from_pretrained(name, **options)
    first = TextEncoder.from_pretrained(name, **options)
    if not config.get("second"):
        return first
    second = load_text_encoder({k: v for k, v in config["second"].items() if k != "second"})
    return DualTextEncoder(first, second)
