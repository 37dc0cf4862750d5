"""Tiny random-initialised BERT for tests and CPU demos (no download, seconds to build).

`make_tiny_bert(dir)` writes a folder that `TextEncoder.from_pretrained(dir)` loads through exactly the
same path as Bio_ClinicalBERT: `config.json` + `model.safetensors` (a `BertModel`) + `tokenizer.json` +
`tokenizer_config.json` (a WordPiece vocabulary trained on a small English + Chinese radiology corpus).
"""

from __future__ import annotations

from pathlib import Path

# A few radiology sentences in English and Chinese: enough for a WordPiece vocabulary that covers the
# words and Chinese characters the report writer uses, so tests see real (non-[UNK]) tokens.
RADIOLOGY_CORPUS: tuple[str, ...] = (
    "No acute cardiopulmonary abnormality.",
    "The lungs are clear. No pleural effusion or pneumothorax.",
    "A 12 mm ground-glass nodule in the right upper lobe.",
    "A 8 mm solid nodule in the left lower lobe, unchanged from prior.",
    "Part-solid nodule in the right middle lobe measuring 15 mm.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Moderate right pleural effusion. Heart size is normal.",
    "Centrilobular emphysema in both upper lobes.",
    "Consolidation in the left lower lobe consistent with pneumonia.",
    "Multiple bilateral pulmonary nodules, suspicious for metastases.",
    "Mediastinal and hilar lymph nodes are not enlarged.",
    "Degenerative changes of the thoracic spine. No fracture.",
    "Findings: a spiculated mass in the right upper lobe. Impression: suspicious for malignancy.",
    "Non-contrast CT of the chest. Slice thickness 5 mm.",
    "There is a subsolid lesion with a solid component in the left upper lobe.",
    "Trace bilateral effusions. Mild bibasilar atelectasis.",
    "Normal chest CT.",
    "Impression: no evidence of pulmonary embolism.",
    "胸部CT平扫未见明显异常。",
    "右肺上叶见一磨玻璃结节，直径约12毫米。",
    "左肺下叶实性结节，大小约8毫米，较前无变化。",
    "右肺中叶部分实性结节，直径约15毫米。",
    "左侧少量胸腔积液，邻近肺组织膨胀不全。",
    "右侧中等量胸腔积液，心脏大小正常。",
    "双肺上叶小叶中心型肺气肿。",
    "左肺下叶实变，考虑肺炎。",
    "双肺多发结节，考虑转移瘤可能。",
    "纵隔及肺门淋巴结未见肿大。",
    "胸椎退行性改变，未见骨折。",
    "诊断：右肺上叶毛刺状肿块，恶性可能大。",
    "双肺纹理清晰，未见胸腔积液及气胸。",
    "左肺上叶亚实性病灶伴实性成分。",
    "双侧少量胸腔积液，双肺底轻度肺不张。",
)


def make_tiny_bert(
    out_dir,
    corpus: list[str] | None = None,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    vocab_size: int = 800,
    max_position: int = 512,
    seed: int = 0,
) -> Path:
    """Build and save a random-initialised `BertModel` with a WordPiece tokenizer trained on `corpus`.

    Args:
        out_dir: folder to write (created).
        corpus: texts for the vocabulary; defaults to `RADIOLOGY_CORPUS` (English + Chinese).
        hidden_size, num_layers, num_heads: model size (tiny by default: 32 / 2 / 2).
        vocab_size: upper bound on the WordPiece vocabulary size.
        max_position: number of position embeddings (the longest sequence the model accepts).
        seed: torch seed for the random weights (same seed -> same weights).

    Returns:
        The folder, loadable offline with `AutoTokenizer`/`AutoModel.from_pretrained(folder)`.
    """
    import torch
    from transformers import BertConfig, BertModel

    from medgen.text.pretrain import train_wordpiece_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_wordpiece_tokenizer(list(corpus or RADIOLOGY_CORPUS), vocab_size=vocab_size)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_position,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
