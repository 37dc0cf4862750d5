"""The slice reader's recipe: tokenizer and LM corpus from medgen's report writer (train phrasing families)
plus the slice captions and answers; the three stages on the preview's training pairs; the held-out score."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.slices.describer.evaluate import evaluate_slice_reader
from medgen.slices.describer.model import SliceReader
from medgen.slices.describer.questions import KEYS, QUESTIONS, answers
from medgen.slices.describer.train import train_stages
from medgen.slices.generator.data import PreviewPairs, build_pairs
from medgen.slices.sources import EVAL_SEED0, TRAIN_SEED0

DEFAULTS = {"n_subjects": 1200, "n_reports": 6000, "vocab_size": 1500, "lm_steps": 600, "ground_steps": 3000,
            "align_steps": 400, "instruct_steps": 2500, "batch_size": 32, "train_vision": True, "n_held_out": 100}
STAGE_OPTIONS = ("lm_steps", "ground_steps", "align_steps", "instruct_steps", "batch_size", "train_vision")


def corpus(pairs: PreviewPairs, n_reports: int) -> list[str]:
    """Report-writer reports (train families) + captions + question/answer lines, EN and ZH."""
    from medgen.reader.corpus import make_examples

    texts = [ex.text for ex in make_examples(n_reports, split="train", seed=97)]
    texts += list(pairs.captions_en) + list(pairs.captions_zh)
    for f in pairs.findings[:400]:
        for language in ("en", "zh"):
            reply = answers(f, language)
            texts += [f"Q: {QUESTIONS[language][k]} A: {reply[k]}" for k in KEYS]
    return texts


def held_out_slices(n: int):
    pairs = build_pairs(n, seed0=EVAL_SEED0, extra=0)
    return [img.astype(np.float32) * 1024.0 for img in pairs.image], pairs.findings


def train_slice_reader(out, *, pairs_path=None, clip=None, overwrite: bool = False, **options) -> dict:
    """Train and save a slice reader; `clip`: a SliceCLIP folder whose image tower starts the vision tower."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    options = {**DEFAULTS, **options}
    pairs = (PreviewPairs.load(pairs_path) if pairs_path is not None and Path(pairs_path).is_file()
             else build_pairs(options["n_subjects"], seed0=TRAIN_SEED0))
    texts = corpus(pairs, options["n_reports"])
    reader = SliceReader.new(texts, vocab_size=options["vocab_size"])
    if clip is not None:
        from medgen.slices.clip import SliceCLIP

        reader.init_vision_from_clip(SliceCLIP.from_pretrained(clip))
    record = train_stages(reader, pairs, texts, **{k: options[k] for k in STAGE_OPTIONS})
    hu, findings = held_out_slices(options["n_held_out"])
    record["held_out"] = evaluate_slice_reader(reader, hu, findings)
    record["options"] = options
    reader.config["training"] = record
    reader.save_pretrained(out, overwrite=overwrite)
    return record
