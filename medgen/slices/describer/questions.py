"""Questions a slice reader answers, and their answers from a slice findings dict (`SliceSample.findings`),
in English and Chinese; `findings_from_answers` turns answers back into a findings dict.

Answers use a small closed vocabulary (yes / no, a side, a lobe name, "<n> mm", a type, an effusion side), so
they can be parsed back without the rule parser and scored attribute by attribute.
"""

from __future__ import annotations

import re

from medgen.reports import phrases_en as en
from medgen.reports import phrases_zh as zh

KEYS = ("presence", "side", "lobe", "size", "type", "effusion")
QUESTIONS = {
    "en": {"presence": "Is there a lesion?", "side": "Which side is the largest lesion on?",
           "lobe": "Which lobe is the largest lesion in?", "size": "How large is the largest lesion?",
           "type": "Is the largest lesion ground-glass, part-solid or solid?",
           "effusion": "Is there a pleural effusion?"},
    "zh": {"presence": "有无病灶？", "side": "最大病灶位于哪一侧？", "lobe": "最大病灶位于哪个肺叶？",
           "size": "最大病灶大小？", "type": "最大病灶为磨玻璃、部分实性还是实性？", "effusion": "有无胸腔积液？"},
}
NONE = {"en": "none", "zh": "无"}
YES_NO = {"en": ("yes", "no"), "zh": ("有", "无")}
SIDES = {"en": {"right": "right", "left": "left", "bilateral": "bilateral"},
         "zh": {"right": "右侧", "left": "左侧", "bilateral": "双侧"}}
TYPES = {"en": {t: t for t in ("ground-glass", "part-solid", "solid")},
         "zh": {t: zh.DENSITY_ADJ["train"][t][0] for t in ("ground-glass", "part-solid", "solid")}}
LOBES = {"en": dict(en.LOBE_FULL), "zh": dict(zh.LOBE)}


def answers(findings: dict, language: str) -> dict[str, str]:
    """The answer to each question (`KEYS`) for a slice findings dict."""
    lesions = findings["lesions"]
    top = lesions[0] if lesions else None
    none = NONE[language]
    yes, no = YES_NO[language]
    return {"presence": yes if top else no,
            "side": SIDES[language][top["side"]] if top else none,
            "lobe": LOBES[language][top["lobe"]] if top else none,
            "size": f"{int(round(top['size_mm']))} mm" if top else none,
            "type": TYPES[language][top["type"]] if top else none,
            "effusion": SIDES[language][findings["effusion"]] if findings.get("effusion") else no}


def _lookup(table: dict, text: str):
    text = text.strip()
    # longest names first: "right upper lobe" must not match inside another name
    for key, name in sorted(table.items(), key=lambda kv: -len(kv[1])):
        if name and name in text:
            return key
    return None


def findings_from_answers(replies: dict[str, str], language: str) -> dict:
    """Parse answers back: {"lesion": bool, "side", "lobe", "size_mm", "type", "effusion"} (None = not said)."""
    yes = YES_NO[language][0]
    present = replies.get("presence", "").strip().startswith(yes)
    size = re.search(r"(\d+(?:\.\d+)?)\s*mm", replies.get("size", ""))
    effusion = _lookup(SIDES[language], replies.get("effusion", ""))
    return {"lesion": present,
            "side": _lookup({k: v for k, v in SIDES[language].items() if k != "bilateral"}, replies.get("side", ""))
            if present else None,
            "lobe": _lookup(LOBES[language], replies.get("lobe", "")) if present else None,
            "size_mm": float(size.group(1)) if present and size else None,
            "type": _lookup(TYPES[language], replies.get("type", "")) if present else None,
            "effusion": effusion}
