"""Report text encoders: Hugging Face BERT-style models loaded offline, pooled, cached; dual (SDXL-style)."""

from medgen.text.dual import DualTextEncoder
from medgen.text.encoder import DEFAULT_TEXT_ENCODER, TextEncoder, TextEncoding
from medgen.text.loading import load_text_encoder

__all__ = ["DEFAULT_TEXT_ENCODER", "DualTextEncoder", "TextEncoder", "TextEncoding", "load_text_encoder"]
