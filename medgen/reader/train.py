"""Train the `ReportReader` on written reports of the *training* phrasing families only.

Targets are the writer's span marks (`medgen.reports.spans`) projected on tokens; the loss is per-label
binary cross-entropy over real tokens. Validation uses training families with another seed (the held-out
families are for `medgen evaluate` alone). Reports longer than one window are cut into random windows, as
the reader reads them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medgen.engine.common import seed_everything
from medgen.engine.optim import cosine_warmup_factor
from medgen.io.weights import quiet_transformers
from medgen.reader.corpus import make_examples
from medgen.reader.labels import LABELS, token_targets
from medgen.reader.model import ReportReader


@dataclass
class ReaderTrainConfig:
    """Args:
        encoder: text encoder folder (or cached hub id) the reader starts from.
        out: output folder for the trained reader.
        n_train / n_val: written reports to train / validate on.
        steps, batch_size, lr, warmup: optimisation (AdamW, linear warm-up then cosine).
        window: reader window in tokens (None: the encoder's limit, at most 256).
        p_unrelated: fraction of unrelated English paragraphs (no tags) among training reports.
        token_dropout: fraction of report tokens replaced by [MASK] in each training batch (targets kept), so
            that a tag is read from its context too, not only from a word the reader has seen.
        encoder_lr: learning rate of the encoder (None: `lr`); the head always uses `lr`.
        freeze_embeddings: keep the encoder's (domain-pretrained) word embeddings as they are.
    """

    encoder: str
    out: str
    n_train: int = 16000
    n_val: int = 400
    steps: int = 3000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 200
    weight_decay: float = 0.01
    window: int | None = None
    p_unrelated: float = 0.03
    token_dropout: float = 0.0
    encoder_lr: float | None = None
    freeze_embeddings: bool = False
    seed: int = 0
    log_every: int = 100

    def __post_init__(self):
        for name in ("n_train", "n_val", "steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be > 0, got {self.lr}")


def _encode(reader: ReportReader, examples, progress: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for ex in tqdm(examples, desc="tokenizing", leave=False, mininterval=2, disable=not progress):
        ids, offsets = reader.tokenize(ex.text)
        out.append((np.asarray(ids, dtype=np.int64), token_targets(offsets, ex.spans)))
    return out


def _batch(reader: ReportReader, items, rng: np.random.Generator, token_dropout: float = 0.0):
    size = reader.window - 2
    rows = []
    for ids, targets in items:
        start = int(rng.integers(len(ids) - size + 1)) if len(ids) > size else 0
        rows.append((ids[start:start + size], targets[start:start + size]))
    length = max(len(r[0]) for r in rows) + 2
    input_ids = torch.full((len(rows), length), reader.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    target = torch.zeros((len(rows), length, len(LABELS)))
    for i, (ids, tags) in enumerate(rows):
        n = len(ids)
        if token_dropout > 0:
            ids = np.where(rng.random(n) < token_dropout, reader.tokenizer.mask_token_id, ids)
        input_ids[i, :n + 2] = torch.tensor(reader.wrap(ids.tolist()))
        mask[i, :n + 2] = 1
        target[i, 1:n + 1] = torch.from_numpy(tags)
    return input_ids, mask, target


def _loss(reader, input_ids, mask, target) -> torch.Tensor:
    logits = reader(input_ids, mask)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
    return (loss * mask).sum() / mask.sum()


def train_reader(config: ReaderTrainConfig, *, progress: bool = True) -> dict:
    """Train, validate, save the reader to `config.out`; returns the run summary (also written as JSON)."""
    seed_everything(config.seed)
    with quiet_transformers():
        reader = ReportReader.from_text_encoder(config.encoder, window=config.window)
    started = time.time()
    train = _encode(reader, make_examples(config.n_train, split="train", seed=config.seed,
                                          p_unrelated=config.p_unrelated, augmented=True), progress)
    val_examples = make_examples(config.n_val, split="train", seed=config.seed + 10_000)
    val = _encode(reader, val_examples, progress)
    rng = np.random.default_rng(config.seed)
    if config.freeze_embeddings:
        reader.encoder.get_input_embeddings().requires_grad_(False)
    encoder_params = [p for p in reader.encoder.parameters() if p.requires_grad]
    groups = [{"params": list(reader.head.parameters()), "scale": 1.0},
              {"params": encoder_params, "scale": (config.encoder_lr or config.lr) / config.lr}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step):
        return config.lr * cosine_warmup_factor(step, config.warmup, config.steps)

    reader.train()
    history, running = [], []
    bar = tqdm(range(config.steps), desc="reader", disable=not progress, mininterval=5)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step) * group["scale"]
        picks = rng.integers(len(train), size=config.batch_size)
        loss = _loss(reader, *_batch(reader, [train[i] for i in picks], rng, config.token_dropout))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reader.parameters(), 1.0)
        optimizer.step()
        running.append(loss.item())
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            history.append({"step": step + 1, "loss": float(np.mean(running)), "lr": lr_at(step)})
            bar.set_postfix(loss=f"{np.mean(running):.4f}")
            running = []
    reader.eval()
    with torch.no_grad():
        val_loss = float(np.mean([float(_loss(reader, *_batch(reader, val[i:i + 32], rng)))
                                  for i in range(0, len(val), 32)]))
    from medgen.reader.scoring import score_reader

    val_scores = score_reader(reader, val_examples)
    with quiet_transformers():
        reader.save_pretrained(config.out)
    summary = {"config": asdict(config), "train_seconds": round(time.time() - started, 1), "val_loss": val_loss,
               "val_scores_training_families": val_scores["overall"], "history": history}
    (Path(config.out) / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
