"""CLIP-style slice-report model: a small ViT image tower, medgen's text encoder, a shared embedding space.

Image tower: transformers `CLIPVisionModel` built locally from a small `CLIPVisionConfig` (one input
channel). Text tower: a `medgen.text.TextEncoder` (by default the default model's compact domain BERT,
``default_model_path() / "text_encoder"``), mean-pooled. Both are projected linearly to `embed_dim` and
L2-normalised; a learnable temperature scales the cosine similarities; the loss is the symmetric InfoNCE
of CLIP. The model owns its preprocessing: images go in as 2D HU arrays and pass through
`medgen.slices.data.slice_transform` with the model's `window` and `image_size`.

A saved model folder::

    slice_clip_config.json    constructor arguments (vision tower, embed_dim, window, ...)
    model.safetensors         image tower, both projections, temperature
    text_encoder/             TextEncoder.save_pretrained (HF config + model.safetensors + tokenizer)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from medgen.engine.optim import warmup_cosine_schedule
from medgen.errors import ModelNotFoundError
from medgen.io.weights import WEIGHTS_NAME, PretrainedMixin, load_weights, quiet_transformers, save_weights
from medgen.slices.data import slice_transform
from medgen.text import TextEncoder
from medgen.volume import LUNG_WINDOW

CONFIG_NAME = "slice_clip_config.json"
VISION_DEFAULTS = {
    "patch_size": 16,
    "hidden_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 512,
}
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: similarities are never scaled by more than 100


class ContrastiveHeads(nn.Module):
    """Everything but the text encoder: ViT image tower, image and text projections, log temperature."""

    def __init__(self, vision: dict, image_size: int, text_hidden: int, embed_dim: int, temperature: float):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        config = CLIPVisionConfig(image_size=image_size, num_channels=1, **vision)
        self.vision = CLIPVisionModel(config)
        self.image_proj = nn.Linear(config.hidden_size, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_hidden, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))


class SliceCLIP(PretrainedMixin, nn.Module):
    """Slice image <-> caption embeddings in one space.

    Args:
        text_encoder: a `TextEncoder` (its hidden size sets the text projection's input).
        vision: `CLIPVisionConfig` arguments overriding `VISION_DEFAULTS` (patch_size, hidden_size, ...).
        image_size: pixels per side the image tower sees (a multiple of patch_size).
        embed_dim: dimension of the shared space.
        window: HU mapped to [-1, 1] before the image tower (lung window by default: the captions are
            about lung findings).
        temperature: initial softmax temperature (learned).
    """

    config_name = CONFIG_NAME

    def __init__(
        self,
        text_encoder: TextEncoder,
        *,
        vision: dict | None = None,
        image_size: int = 128,
        embed_dim: int = 128,
        window=LUNG_WINDOW,
        temperature: float = 0.07,
    ):
        super().__init__()
        vision = {**VISION_DEFAULTS, **(vision or {})}
        unknown = sorted(set(vision) - set(VISION_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown `vision` keys {unknown}; expected some of {sorted(VISION_DEFAULTS)}")
        if image_size % vision["patch_size"]:
            raise ValueError(
                f"`image_size` ({image_size}) must be a multiple of patch_size ({vision['patch_size']})"
            )
        if embed_dim < 1 or not 0 < temperature < 1:
            raise ValueError(
                f"`embed_dim` must be >= 1 and `temperature` in (0, 1), got {embed_dim}, {temperature}"
            )
        self.config = {
            "vision": vision,
            "image_size": int(image_size),
            "embed_dim": int(embed_dim),
            "window": [float(w) for w in window],
            "temperature": float(temperature),
        }
        self.text_encoder = text_encoder
        self.heads = ContrastiveHeads(vision, image_size, text_encoder.hidden_size, embed_dim, temperature)
        self.transform = slice_transform(window, image_size)

    # ------------------------------------------------------------------------------------ loading
    @classmethod
    def from_text_encoder(cls, path=None, **kwargs) -> SliceCLIP:
        """A new (untrained) model on a text encoder folder; None = the default model's text encoder."""
        if path is None:
            from medgen.pipelines.default_model import default_model_path

            path = default_model_path() / "text_encoder"
            if not Path(path).is_dir():
                raise ModelNotFoundError(
                    f"the default model's text encoder is not installed (looked for {path}); "
                    "pass a text encoder folder (`--encoder DIR`)"
                )
        with quiet_transformers():
            encoder = TextEncoder.from_pretrained(path)
        return cls(encoder, **kwargs)

    # `save_pretrained` / `from_pretrained` (`PretrainedMixin`): config, head weights, text encoder folder
    def _save_files(self, folder: Path, dtype: torch.dtype | None) -> dict:
        save_weights(self.heads, folder / WEIGHTS_NAME, dtype)
        with quiet_transformers():
            self.text_encoder.save_pretrained(folder / "text_encoder", dtype=dtype)
        return dict(self.config)

    @classmethod
    def _from_files(cls, folder: Path, config: dict) -> SliceCLIP:
        with quiet_transformers():
            encoder = TextEncoder.from_pretrained(folder / "text_encoder")
        model = cls(
            encoder,
            vision=config["vision"],
            image_size=config["image_size"],
            embed_dim=config["embed_dim"],
            window=config["window"],
            temperature=config["temperature"],
        )
        load_weights(model.heads, folder / WEIGHTS_NAME)
        if "grounding" in config:
            model.config["grounding"] = config["grounding"]
        return model.eval()

    @classmethod
    def _not_found(cls, folder: Path) -> Exception:
        return ModelNotFoundError(
            f"no slice CLIP model at {folder} (no {CONFIG_NAME}); train one with "
            "`medgen slices train-clip --out DIR`"
        )

    # ----------------------------------------------------------------------------------- encoding
    @property
    def device(self) -> torch.device:
        return self.heads.logit_scale.device

    def preprocess(self, images) -> torch.Tensor:
        """2D HU arrays (any size) or `SliceSample`s (their `hu`) -> (B, 1, S, S) on the model's device."""
        arrays = [getattr(image, "hu", image) for image in images]
        for i, array in enumerate(arrays):
            if np.ndim(array) != 2:
                raise ValueError(f"image {i} must be a 2D HU array (H, W), got shape {np.shape(array)}")
        return torch.stack([self.transform(np.asarray(a, np.float32)) for a in arrays]).to(self.device)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) preprocessed images -> (B, embed_dim) unit vectors."""
        pooled = self.heads.vision(pixel_values=pixels).pooler_output
        return F.normalize(self.heads.image_proj(pooled), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """B captions -> (B, embed_dim) unit vectors."""
        return F.normalize(self.heads.text_proj(self.text_encoder(list(texts)).pooled), dim=-1)

    def forward(self, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Scaled similarity logits (B_images, B_texts)."""
        scale = self.heads.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        return scale * self.encode_image(pixels) @ self.encode_text(texts).T


def contrastive_loss(logits: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """Symmetric InfoNCE. Identical captions in a batch (e.g. two normal slices) are all positives: the
    target spreads evenly over them, so the model is not pushed to tell apart two equal texts."""
    same = torch.tensor([[a == b for b in texts] for a in texts], dtype=logits.dtype, device=logits.device)
    target = same / same.sum(dim=1, keepdim=True)
    image_to_text = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    text_to_image = -(target * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (image_to_text + text_to_image) / 2


def _check_positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    return int(value)


def augmentation(size: int, seed: int = 0):
    """MONAI random affine for (C, size, size) training images: +-6 degrees, +-6 % shift, +-8 % zoom, edges
    replicated. No flips: a mirrored slice would contradict its caption's side."""
    from monai.transforms import RandAffine

    shift = 0.06 * size  # RandAffine shifts in pixels
    jitter = RandAffine(
        prob=0.8,
        rotate_range=(0.1,),
        translate_range=(shift, shift),
        scale_range=(0.08, 0.08),
        padding_mode="border",
        mode="bilinear",
    )
    jitter.set_random_state(seed)
    return jitter


def _plain(tensor) -> torch.Tensor:
    """A MONAI MetaTensor as a plain tensor (the metadata is not needed inside the training step)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


def train_clip(
    model: SliceCLIP,
    samples,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 3e-4,
    languages=("en", "zh"),
    text_trainable_layers: int | None = None,
    warmup: float = 0.05,
    augment: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train `model` in place on captioned slices; returns the loss of every step.

    Args:
        samples: `SliceSample`s; each step draws `batch_size` of them (epoch-wise shuffled) and, per slice,
            one caption in a language from `languages`.
        text_trainable_layers: top text-encoder layers trained (None: all of them; 0: frozen encoder).
        warmup: fraction of `steps` of linear learning-rate warm-up before the cosine decay.
        augment: small random rotations, shifts and zooms (`augmentation`; never a flip).
    """
    steps, batch_size = _check_positive(steps, "steps"), _check_positive(batch_size, "batch_size")
    if len(samples) < 2:
        raise ValueError(f"contrastive training needs at least 2 slices, got {len(samples)}")
    if not lr > 0 or not 0 <= warmup < 1:
        raise ValueError(f"`lr` must be > 0 and `warmup` in [0, 1), got {lr}, {warmup}")
    bad = [lang for lang in languages if lang not in ("en", "zh")]
    if not languages or bad:
        raise ValueError(f"`languages` must hold 'en' and/or 'zh', got {tuple(languages)!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    layers = (
        model.text_encoder.model.config.num_hidden_layers
        if text_trainable_layers is None
        else text_trainable_layers
    )
    model.text_encoder.set_trainable_layers(int(layers))
    pixels = torch.cat([model.preprocess(samples[i : i + 256]) for i in range(0, len(samples), 256)])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    # linear warm-up over max(1, warmup * steps) steps, then cosine decay to 0
    schedule = warmup_cosine_schedule(optimizer, max(1, int(warmup * steps)), steps)
    batch_size = min(batch_size, len(samples))
    jitter = augmentation(model.config["image_size"], seed) if augment else None
    order, cursor, losses = rng.permutation(len(samples)), 0, []
    model.train()
    bar = tqdm(range(steps), desc="slice CLIP", unit="step", disable=not progress, mininterval=2)
    for _ in bar:
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(samples)), 0
        index = order[cursor : cursor + batch_size]
        cursor += batch_size
        texts = [samples[i].caption(str(rng.choice(languages))) for i in index]
        batch = pixels[torch.as_tensor(index)]
        if (
            jitter is not None
        ):  # one random affine per group of 8 slices (channels), cheaper than one per slice
            batch = torch.cat([_plain(jitter(group[:, 0])).unsqueeze(1) for group in batch.split(8)])
        loss = contrastive_loss(model(batch, texts), texts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.text_encoder.set_trainable_layers(0)  # frozen again: evaluation may use the encoder's cache
    model.eval()
    return losses


def ground_tower(model: SliceCLIP, samples, *, steps: int, batch_size: int = 32, progress: bool = True) -> dict:
    """Before contrastive training: the image tower learns per-patch anatomy and findings from the slices' label
    maps (`medgen.slices.describer.grounding`), which captions alone teach too slowly on a CPU budget."""
    from medgen.slices.describer.grounding import ground_vision

    size = int(model.config["image_size"])
    pixels = torch.cat([model.preprocess(samples[i : i + 256]) for i in range(0, len(samples), 256)])

    def on_input_grid(label2d: np.ndarray) -> np.ndarray:  # nearest resize, as `preprocess` resizes the image
        rows = ((np.arange(size) + 0.5) * label2d.shape[0] / size).astype(int)
        cols = ((np.arange(size) + 0.5) * label2d.shape[1] / size).astype(int)
        return label2d[np.ix_(rows, cols)]

    labels = np.stack([on_input_grid(s.label2d) for s in samples])
    has_lesion = [bool(s.findings["lesions"]) for s in samples]
    record = ground_vision(model.heads.vision, pixels.to(model.device), labels, None, has_lesion, steps=steps,
                           batch_size=batch_size, progress=progress)
    model.config["grounding"] = record
    return record


def rank_metrics(similarity, captions=None, ks=(1, 5)) -> dict:
    """Top-k retrieval both ways from an (N images, N texts) similarity matrix whose diagonal pairs match.

    Text j counts as correct for image i when j == i or, given `captions`, when caption j equals caption i
    (two normal slices share one caption). Ties count against the model: a correct item is within top k
    when fewer than k wrong items score at least as high, so a constant similarity gets 0, never 100 %.

    Returns:
        {"n": N, "image_to_text_top1": fraction, ..., "text_to_image_top5": fraction} for each k in `ks`.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or not sim.size:
        raise ValueError(f"`similarity` must be a square (N, N) matrix, got shape {sim.shape}")
    n = sim.shape[0]
    if captions is None:
        correct = np.eye(n, dtype=bool)
    else:
        if len(captions) != n:
            raise ValueError(f"`captions` must hold {n} texts, got {len(captions)}")
        correct = np.array([[a == b for b in captions] for a in captions])
    out = {"n": n}
    for name, matrix in (("image_to_text", sim), ("text_to_image", sim.T)):
        best = np.where(correct, matrix, -np.inf).max(axis=1, keepdims=True)
        wrong_above = (np.where(correct, -np.inf, matrix) >= best).sum(axis=1)
        for k in ks:
            out[f"{name}_top{k}"] = float((wrong_above < k).mean())
    return out


@torch.no_grad()
def embed_pairs(model: SliceCLIP, pairs, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit image and text embeddings (N, D) of (image, caption) pairs."""
    model.eval()
    images, texts = [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        images.append(model.encode_image(model.preprocess([image for image, _ in chunk])).cpu())
        texts.append(model.encode_text([text for _, text in chunk]).cpu())
    return torch.cat(images), torch.cat(texts)


def retrieval_metrics(model: SliceCLIP, pairs, *, batch_size: int = 64) -> dict:
    """Top-1 / top-5 image->text and text->image retrieval over N (image, caption) pairs (see `rank_metrics`).

    Args:
        pairs: (2D HU array or `SliceSample`, caption) tuples; the gallery is all N captions / images.
    """
    pairs = list(pairs)
    if len(pairs) < 2:
        raise ValueError(f"retrieval needs at least 2 pairs, got {len(pairs)}")
    images, texts = embed_pairs(model, pairs, batch_size)
    captions = [text for _, text in pairs]
    out = rank_metrics((images @ texts.T).numpy(), captions)
    out["unique_captions"] = len(set(captions))
    return out


@torch.no_grad()
def clip_score(model: SliceCLIP, image, text: str) -> float:
    """Cosine similarity in [-1, 1] between a slice (2D HU array or `SliceSample`) and a caption."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"`text` must be a non-empty string, got {text!r}")
    model.eval()
    return float((model.encode_image(model.preprocess([image])) @ model.encode_text([text]).T).item())
