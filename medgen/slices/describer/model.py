"""LLaVA-style slice reader: transformers `LlavaForConditionalGeneration` built from small configs, a CLIP
vision tower (one input channel, the slice CLIP's architecture), a two-layer GELU projector and a small Llama
causal LM with its own BPE tokenizer trained on medgen's report corpus (EN + ZH).

A prompt is ``<s>`` + `n_image_tokens` ``<image>`` tokens (replaced by the projected patch features) + the
text; answers end with ``</s>``. Saved as a folder: the transformers model (config.json +
model.safetensors), tokenizer.json and slice_reader.json (window, image size, what it was trained on).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medgen.errors import InputFileError
from medgen.io.weights import PretrainedMixin, cast_safetensors
from medgen.volume import LUNG_WINDOW

CONFIG_NAME = "slice_reader.json"
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
VISION = {"patch_size": 16, "hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
          "intermediate_size": 512}
TEXT = {"hidden_size": 192, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 512,
        "max_position_embeddings": 256}


def train_tokenizer(texts, vocab_size: int = 1500):
    """BPE on NFKC text, digits one per token (sizes generalise), CJK characters as their own words."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(r"[\u4e00-\u9fff]", behavior="isolated"),
        pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)])
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>", additional_special_tokens=["<image>"])


def build_llava(tokenizer, image_size: int = 128, vision: dict | None = None, text: dict | None = None):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision_config = CLIPVisionConfig(image_size=image_size, num_channels=1, **{**VISION, **(vision or {})})
    text = {**TEXT, **(text or {})}
    text_config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              num_key_value_heads=text["num_attention_heads"], **text)
    patches = (image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(vision_config=vision_config, text_config=text_config,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=patches,
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    return LlavaForConditionalGeneration(config)


class SliceReader(PretrainedMixin, torch.nn.Module):
    """`read(hu_slices, questions)` -> answers; the model owns its preprocessing (lung window, resize)."""

    config_name = CONFIG_NAME

    def __init__(self, model, tokenizer, config: dict):
        super().__init__()
        self.model, self.tokenizer, self.config = model, tokenizer, dict(config)
        self.n_image_tokens = (int(config["image_size"]) // model.config.vision_config.patch_size) ** 2

    @classmethod
    def new(cls, texts, *, image_size: int = 128, vision=None, text=None, vocab_size: int = 1500) -> SliceReader:
        tokenizer = train_tokenizer(texts, vocab_size)
        config = {"image_size": image_size, "window": list(LUNG_WINDOW), "training": {}}
        return cls(build_llava(tokenizer, image_size, vision, text), tokenizer, config)

    # ---------------------------------------------------------------------------------- persistence
    def save_pretrained(self, path, *, overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
        """Write the transformers model, tokenizer.json and slice_reader.json to `path` (atomically)."""
        return super().save_pretrained(path, overwrite=overwrite, dtype=dtype)

    def _save_files(self, folder: Path, dtype: torch.dtype | None) -> dict:
        self.model.save_pretrained(folder)
        self.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
        if dtype is not None:
            cast_safetensors(folder, dtype)
        return dict(self.config)

    @classmethod
    def _from_files(cls, folder: Path, config: dict) -> SliceReader:
        from transformers import LlavaForConditionalGeneration, PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token="<pad>",
                                            bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                            additional_special_tokens=["<image>"])
        model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        return cls(model, tokenizer, config)

    @classmethod
    def _not_found(cls, folder: Path) -> Exception:
        return InputFileError(folder, f"not a slice reader folder (no {CONFIG_NAME}); train one with "
                                      "`medgen train slices reader` or use the embedded default")

    def init_vision_from_clip(self, clip) -> None:
        """Start the vision tower from a `medgen.slices.clip.SliceCLIP`'s image tower (as LLaVA starts from
        CLIP); the towers must share a configuration and the window."""
        tower = self.model.model.vision_tower
        source = clip.heads.vision
        if source.config.to_dict().get("hidden_size") != tower.config.hidden_size or \
                clip.config["image_size"] != self.config["image_size"]:
            raise ValueError("the slice CLIP's image tower has another configuration than this reader's")
        if list(clip.config["window"]) != list(self.config["window"]):
            raise ValueError(f"the slice CLIP reads window {clip.config['window']}, this reader {self.config['window']}")
        tower.load_state_dict(source.state_dict())
        self.config["vision_init"] = "slice CLIP"

    def pixels(self, hu_slices) -> torch.Tensor:
        """(B, 1, S, S) model input from 2D HU arrays (any size; display orientation)."""
        from medgen.slices.data import slice_transform

        transform = slice_transform(tuple(self.config["window"]), int(self.config["image_size"]))
        return torch.stack([transform(np.asarray(hu, np.float32)) for hu in hu_slices])

    def prompt_ids(self, text: str) -> list[int]:
        image = self.tokenizer.convert_tokens_to_ids("<image>")
        return [self.tokenizer.bos_token_id] + [image] * self.n_image_tokens + self.tokenizer.encode(
            text, add_special_tokens=False)

    @torch.no_grad()
    def read(self, hu_slices, questions: list[str], max_new_tokens: int = 8) -> list[list[str]]:
        """Greedy answers: one list (per question) per slice. Prompts of one question share a batch."""
        pixels = self.pixels(hu_slices)
        out = [[""] * len(questions) for _ in range(len(pixels))]
        for q, question in enumerate(questions):
            ids = torch.tensor([self.prompt_ids(f"Q: {question} A:")] * len(pixels))
            generated = self.model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                                            max_new_tokens=max_new_tokens, do_sample=False,
                                            pad_token_id=self.tokenizer.pad_token_id,
                                            eos_token_id=self.tokenizer.eos_token_id)
            for b, row in enumerate(generated[:, ids.shape[1]:]):
                out[b][q] = self.tokenizer.decode(row, skip_special_tokens=True).strip()
        return out
