"""Training the LLaVA-style slice reader in LLaVA's stages, on the preview's `PreviewPairs` (slices with their
findings and captions):

0. the causal LM alone on report text (medgen's report writer, train phrasing families, EN + ZH) and captions;
0v. vision grounding: the tower alone on per-patch layout labels (`medgen.slices.describer.grounding`);
1. feature alignment: only the projector learns, on slice -> caption;
2. instruction tuning: questions about the slice (`medgen.slices.describer.questions`) -> short answers; the
   projector, the LM and (unlike LLaVA 1.5, measured to matter here: the tower starts untrained or from the
   slice CLIP) the vision tower learn.
Each stage's loss is on the generated text only (prompt and image positions are masked with -100).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from medgen.engine.optim import one_cycle_adamw, optimizer_step
from medgen.slices.describer.grounding import ground_vision, lesion_weighted_index
from medgen.slices.describer.model import SliceReader
from medgen.slices.describer.questions import KEYS, QUESTIONS, answers

IGNORE = -100


def _pad(rows: list[list[int]], labels: list[list[int]], pad: int):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    target = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels, strict=True)):
        ids[i, :len(r)], target[i, :len(lab)], mask[i, :len(r)] = torch.tensor(r), torch.tensor(lab), 1
    return ids, target, mask


def text_batch(reader: SliceReader, texts: list[str]):
    tok = reader.tokenizer
    rows = [[tok.bos_token_id] + tok.encode(t, add_special_tokens=False)[:120] + [tok.eos_token_id] for t in texts]
    return _pad(rows, rows, tok.pad_token_id)


def image_batch(reader: SliceReader, prompts: list[str], targets: list[str]):
    """Rows of <s> <image>*N prompt target </s>; labels on target and </s> only."""
    tok = reader.tokenizer
    rows, labels = [], []
    for prompt, target in zip(prompts, targets, strict=True):
        head = reader.prompt_ids(prompt)
        tail = tok.encode(target, add_special_tokens=False) + [tok.eos_token_id]
        rows.append(head + tail)
        labels.append([IGNORE] * len(head) + tail)
    return _pad(rows, labels, tok.pad_token_id)


def _set_trainable(reader: SliceReader, parts: tuple[str, ...]) -> list[torch.nn.Parameter]:
    core = reader.model.model
    modules = {"vision": core.vision_tower, "projector": core.multi_modal_projector,
               "lm": torch.nn.ModuleList([core.language_model, reader.model.lm_head])}
    for p in reader.model.parameters():
        p.requires_grad_(False)
    params = []
    for name in parts:
        for p in modules[name].parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def _loop(reader, make_batch, *, steps, lr, parts, name, progress, seed):
    optimizer, schedule, params = one_cycle_adamw(_set_trainable(reader, parts), lr=lr, steps=steps, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    reader.model.train()
    losses, start = [], time.time()
    for _ in tqdm(range(steps), desc=f"slice reader {name}", unit="step", disable=not progress):
        losses.append(optimizer_step(reader.model(**make_batch(rng)).loss, optimizer, schedule, params))
    reader.model.eval()
    return {"steps": steps, "lr": lr, "trained": list(parts), "loss_first50": float(np.mean(losses[:50])),
            "loss_last50": float(np.mean(losses[-50:])), "seconds": round(time.time() - start, 1)}


def pretrain_lm(reader: SliceReader, texts: list[str], *, steps: int, batch_size: int = 32, lr: float = 2e-3,
                progress: bool = True, seed: int = 0) -> dict:
    def batch(rng):
        ids, labels, mask = text_batch(reader, [texts[i] for i in rng.integers(0, len(texts), batch_size)])
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return _loop(reader, batch, steps=steps, lr=lr, parts=("lm",), name="stage 0 (LM)", progress=progress, seed=seed)


def _slice_batch(reader, pixels, pairs, has_lesion, rng, batch_size, target_fn):
    index = lesion_weighted_index(has_lesion, rng, batch_size)
    prompts, targets = zip(*(target_fn(pairs, int(i), rng) for i in index), strict=True)
    ids, labels, mask = image_batch(reader, list(prompts), list(targets))
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "pixel_values": pixels[index]}


def caption_target(pairs, i, rng):
    return "", (pairs.captions_zh if rng.random() < 0.5 else pairs.captions_en)[i]


def question_target(pairs, i, rng):
    language = "zh" if rng.random() < 0.5 else "en"
    key = KEYS[int(rng.integers(len(KEYS)))]
    return f"Q: {QUESTIONS[language][key]} A:", answers(pairs.findings[i], language)[key]


def train_stages(reader: SliceReader, pairs, texts: list[str], *, lm_steps: int, align_steps: int,
                 instruct_steps: int, ground_steps: int = 0, batch_size: int = 32, train_vision: bool = True,
                 progress: bool = True) -> dict:
    """All stages in order; returns the record (also stored in ``reader.config["training"]``)."""
    pixels = reader.pixels([img.astype(np.float32) * 1024.0 for img in pairs.image])
    has_lesion = np.array([bool(f["lesions"]) for f in pairs.findings])
    record = {"n_pairs": len(pairs), "n_texts": len(texts)}
    if lm_steps:
        record["stage0_lm"] = pretrain_lm(reader, texts, steps=lm_steps, batch_size=batch_size, progress=progress)
    if ground_steps:
        record["stage0v_ground"] = ground_vision(reader.model.model.vision_tower, pixels, pairs.labels, pairs.density,
                                                 has_lesion, steps=ground_steps,
                                                 batch_size=batch_size, progress=progress)
    if align_steps:
        record["stage1_align"] = _loop(
            reader, lambda rng: _slice_batch(reader, pixels, pairs, has_lesion, rng, batch_size, caption_target),
            steps=align_steps, lr=1e-3, parts=("projector",), name="stage 1 (projector)", progress=progress, seed=1)
    if instruct_steps:
        parts = ("vision", "projector", "lm") if train_vision else ("projector", "lm")
        record["stage2_instruct"] = _loop(
            reader, lambda rng: _slice_batch(reader, pixels, pairs, has_lesion, rng, batch_size, question_target),
            steps=instruct_steps, lr=5e-4, parts=parts, name="stage 2 (instructions)", progress=progress, seed=2)
    reader.config["training"] = record
    return record
