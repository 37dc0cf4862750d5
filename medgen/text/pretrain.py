"""Compact domain BERT pretrained offline on report text (masked language modelling)."""

from __future__ import annotations

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece_tokenizer(corpus: list[str], *, vocab_size: int = 8000, lowercase: bool = True):
    """Train a BERT WordPiece tokenizer on `corpus` (English + Chinese).

    The BERT normaliser puts spaces around CJK characters, so each Chinese character is its own word and
    gets its own vocabulary entry (every character seen in the corpus is kept in the alphabet).

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
        vocab_size=vocab_size, min_frequency=1, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    return BertTokenizer(vocab=backend.get_vocab(), do_lower_case=lowercase)
