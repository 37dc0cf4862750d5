"""Compact domain BERT pretrained offline on report text (masked language modelling)."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def common_chinese_characters() -> list[str]:
    """The 3,755 common Chinese characters of GB2312 level 1 (derived from the codec, nothing stored)."""
    return [bytes([hi, lo]).decode("gb2312") for hi in range(0xB0, 0xD8) for lo in range(0xA1, 0xFF)
            if not (hi == 0xD7 and lo > 0xF9)]  # row 0xD7 ends at 0xF9


def train_wordpiece_tokenizer(corpus: list[str], *, vocab_size: int = 8000, lowercase: bool = True,
                              common_chinese: bool = False):
    """Train a BERT WordPiece tokenizer on `corpus` (English + Chinese).

    The BERT normaliser puts spaces around CJK characters, so each Chinese character is its own word and
    gets its own vocabulary entry (every character seen in the corpus is kept in the alphabet). With
    `common_chinese`, the 3,755 common characters (GB2312 level 1) are in the vocabulary even if the corpus
    lacks them: a report phrased differently from the corpus then gets real tokens instead of [UNK].

    Returns:
        a transformers `BertTokenizer` (fast, `tokenizers`-backed); save it with `save_pretrained(folder)`.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    if not corpus:
        raise ValueError("`corpus` is empty: need at least one text to train a vocabulary")
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=common_chinese_characters() if common_chinese else [],
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    return BertTokenizer(vocab=backend.get_vocab(), do_lower_case=lowercase)


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, *, mask_id: int, vocab_size: int,
                generator: torch.Generator, prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `prob` of the non-special tokens; of those 80% -> [MASK], 10% -> random, 10% kept.

    Args:
        input_ids: (B, L) token ids.
        special: (B, L) bool, True at [CLS]/[SEP]/[PAD] (never picked).
    Returns:
        (masked input ids (B, L), labels (B, L): the original id where picked, -100 elsewhere).
    """
    picked = (torch.rand(input_ids.shape, generator=generator) < prob) & ~special
    if not picked.any() and not special.all():  # at least one target, so the loss is defined
        eligible = (~special).flatten().nonzero().squeeze(1)
        one = eligible[torch.randint(len(eligible), (1,), generator=generator)]
        picked = picked.flatten().index_fill(0, one, True).view_as(picked)
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(picked & (roll < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(picked & (roll >= 0.8) & (roll < 0.9), random_ids, masked)
    return masked, labels


def pretrain_compact_bert(
    corpus: list[str],
    out_dir,
    *,
    vocab_size: int = 8000,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    max_length: int = 128,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
    progress: bool = True,
    lowercase: bool = True,
    common_chinese: bool = True,
    overwrite: bool = False,
    device: str | torch.device | None = None,
) -> Path:
    """Pretrain a compact BERT on report text with masked language modelling; save it for `TextEncoder`.

    Recipe: a WordPiece vocabulary trained on `corpus` (English word pieces and single Chinese characters,
    plus the 3,755 common Chinese characters with `common_chinese`; the vocabulary grows past
    `vocab_size` if that is smaller than the alphabet),
    a `BertForMaskedLM` (intermediate size 4 x hidden, `max_length` positions), 15% masking (80/10/10),
    AdamW (weight decay 0.01) with 5% linear warm-up then linear decay, gradient clipping at 1.0.
    The MLM loss on a fixed evaluation batch is measured before and after training.

    Writes `out_dir` with `TextEncoder.save_pretrained` (atomically): `config.json` + `model.safetensors` (the
    `BertModel` encoder), the tokenizer, and `medgen_text.json` (max_length, pooling, and the "pretraining"
    record with the MLM losses), so `TextEncoder.from_pretrained(out_dir)` loads it.

    Args:
        corpus: report texts (the training split only).
        device: default CUDA when available, else CPU.
    Returns:
        `out_dir` as a Path.
    """
    from transformers import BertConfig, BertForMaskedLM, BertModel

    from medgen.engine.optim import warmup_cosine_schedule
    from medgen.io.atomic import check_output_path
    from medgen.text.encoder import TextEncoder

    # 1. Check inputs (before any work)
    corpus = [t for t in corpus if t and t.strip()]
    if not corpus:
        raise ValueError("`corpus` has no non-empty text to pretrain on")
    for name, value in {"steps": steps, "batch_size": batch_size, "num_layers": num_layers}.items():
        if value < 1:
            raise ValueError(f"`{name}` must be >= 1, got {value}")
    if hidden_size % num_heads:
        raise ValueError(f"`hidden_size` ({hidden_size}) must be divisible by `num_heads` ({num_heads})")
    if max_length < 8:
        raise ValueError(f"`max_length` must be >= 8, got {max_length}")
    out = check_output_path(out_dir, overwrite=overwrite)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    # 2. Vocabulary and token ids (tokenized once)
    tokenizer = train_wordpiece_tokenizer(corpus, vocab_size=vocab_size, lowercase=lowercase,
                                          common_chinese=common_chinese)
    ids = tokenizer(corpus, truncation=True, max_length=max_length)["input_ids"]

    def make_batch(rows: list[list[int]]):
        batch = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
        input_ids, attention = batch["input_ids"], batch["attention_mask"]
        special = torch.isin(input_ids, torch.tensor(sorted(set(tokenizer.all_special_ids))))
        masked, labels = mask_tokens(input_ids, special, mask_id=tokenizer.mask_token_id,
                                     vocab_size=len(tokenizer), generator=generator)
        return masked.to(device), attention.to(device), labels.to(device)

    # 3. Model and optimiser
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
                        max_position_embeddings=max_length, pad_token_id=tokenizer.pad_token_id)
    model = BertForMaskedLM(config).to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr)
    schedule = warmup_cosine_schedule(optimizer, max(1, steps // 20), steps, decay="linear")

    eval_order = torch.randperm(len(ids), generator=generator)[: min(len(ids), 4 * batch_size)]
    eval_batch = make_batch([ids[i] for i in eval_order])

    def mlm_loss(input_ids, attention, labels) -> torch.Tensor:
        # vocabulary logits only at the ~15% picked positions (the output layer dominates CPU time otherwise)
        hidden = model.bert(input_ids=input_ids, attention_mask=attention).last_hidden_state
        picked = labels != -100
        return torch.nn.functional.cross_entropy(model.cls(hidden[picked]), labels[picked])

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = mlm_loss(*eval_batch)
        model.train()
        return float(loss)

    # 4. Train
    loss_start = eval_loss()
    bar = tqdm(range(steps), desc="MLM pretraining", disable=not progress)
    order, cursor = torch.randperm(len(ids), generator=generator), 0
    for _ in bar:
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(ids), generator=generator), 0
        rows = [ids[i] for i in order[cursor: cursor + batch_size]]
        cursor += batch_size
        loss = mlm_loss(*make_batch(rows))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    loss_end = eval_loss()
    if progress:
        print(f"MLM loss on a fixed batch of {len(eval_order)} reports: {loss_start:.3f} -> {loss_end:.3f}")

    # 5. Save the encoder (with a pooler, so AutoModel finds every weight) + tokenizer + medgen config
    encoder = BertModel(config)
    loaded = encoder.load_state_dict(model.bert.state_dict(), strict=False)
    if loaded.unexpected_keys or any(not k.startswith("pooler.") for k in loaded.missing_keys):
        raise RuntimeError(f"MLM encoder weights do not match BertModel: {loaded}")
    record = {"corpus_texts": len(corpus), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
              "vocab_size": len(tokenizer), "mlm_loss_start": loss_start, "mlm_loss_end": loss_end}
    TextEncoder(encoder, tokenizer, max_length=max_length, pooling="mean").save_pretrained(
        out, overwrite=overwrite, extra={"pretraining": record})
    return out
