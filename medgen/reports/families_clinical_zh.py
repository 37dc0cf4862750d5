"""Chinese families in dictated clinical style: 对比前片, 可疑/考虑 hedges, 更正 corrections, 中文数字 sizes,
three diameters, side-specific negations (右侧胸腔未见积液) and findings spread over several sentences.

The only Chinese families that express `certainty == "possible"`. `followup` (held out) uses only the
held-out halves of every bank.
"""

from __future__ import annotations

import numpy as np

from medgen.findings import LOBES, Effusion, Findings
from medgen.reports.common import ClinicalVoice, Measured, chance, clinical_body, pick, size_text
from medgen.reports.families_zh import effusion_words, emphysema_words, lesion_words
from medgen.reports.phrases_zh import (
    DISTRACTORS,
    NEG_EFFUSION,
    NEG_EMPHYSEMA,
    NEG_LESION,
    NORMAL,
    lobe_words,
)
from medgen.reports.spans import certainty_tag, mark, visible

T, H = "train", "heldout"
DATES = ("2025-03-14", "2026年1月8日", "2025.12.02")
COMPARE = {T: ("对比{date}胸部CT：", "与{date}片比较："), H: ("参照{date}旧片：",)}
INTERVAL = {T: ("较前相仿", "较前增大", "为新发", "较前略增大", "大致同前"), H: ("与前片比较无明显变化", "新出现")}
HEDGE_PRE = {T: ("可疑", "疑似", "考虑", "怀疑"), H: ("不除外",)}
CORRECTION = {T: ("（更正：{right}）", "，更正为{right}"), H: ("，应为{right}",)}
RESOLVED = {T: ("原{loc}{noun}已吸收。", "前片所示{loc}{noun}本次已消失。"), H: ("旧片{loc}{noun}现未再显示。",)}
SIDE_NEG = {T: ("{side}胸腔未见⟦eff-|积液⟧。", "{side}未见⟦eff-|胸腔积液⟧。"), H: ("{side}胸膜腔清晰，无⟦eff-|积液⟧。",)}
ANAPHOR = {T: ("此结节大小约{size}。", "病灶大小约{size}。", "测量大小约{size}。"), H: ("本次测得约{size}。",)}
SIZE_STYLES = {T: ("zh-words-mm", "zh-words-cm", "zh-axbxc", "zh-gongfen", "zh-axb-star", "zh-axb", "zh-mm"),
               H: ("zh-words-cm", "zh-gongfen", "zh-axbxc", "zh-haomi")}
_SIDE_WORD = {"left": "左侧", "right": "右侧"}
_OTHER = {"left": "right", "right": "left"}


def _where(m: Measured, rng: np.random.Generator, vocab: str, p_correct: float = 0.15) -> str:
    loc = lobe_words(m.lobe, rng, ("full", "segment", "colloq"))
    if chance(rng, p_correct):
        wrong = visible(lobe_words(pick(rng, [x for x in LOBES if x != m.lobe]), rng, ("full",)))
        return wrong + pick(rng, CORRECTION[vocab]).format(right=loc)
    return loc


def _lesion(m: Measured, rng: np.random.Generator, vocab: str) -> list[str]:
    w = lesion_words(m, rng, vocab)
    size = size_text(m, pick(rng, SIZE_STYLES[vocab]))
    where = _where(m, rng, vocab)
    if m.lesion.certainty == "possible":
        return [pick(rng, (f"{where}见{pick(rng, HEDGE_PRE[vocab])}{w['d']}{w['n']}，大小约{size}。",
                           f"{pick(rng, HEDGE_PRE[vocab])}{where}{w['d']}{w['n']}，约{size}。"))]
    if chance(rng, 0.4):  # spread over several sentences
        return [f"{where}见一{w['n']}。", pick(rng, ANAPHOR[vocab]).format(size=size), f"{w['post']}，{w['mg']}。"]
    interval = f"，{pick(rng, INTERVAL[vocab])}" if chance(rng, 0.5) else ""
    if vocab == H:  # held out: the lesion first, its place after
        return [f"{w['d']}{w['n']}一枚，位于{where}，径线约{size}，{w['mg']}{interval}。"]
    return [f"{where}见{w['d']}{w['n']}，大小约{size}，{w['mg']}{interval}。"]


def _effusion(e: Effusion, rng: np.random.Generator, vocab: str) -> list[str]:
    side, grade = effusion_words(e, rng, vocab)
    noun = mark(pick(rng, ("积液", "胸腔积液", "胸水", "胸膜腔积液")), certainty_tag("eff", e.certainty))
    if e.certainty == "possible":
        out = [f"{side}胸腔{pick(rng, HEDGE_PRE[vocab])}{grade}{noun}。"]
    else:
        interval = f"，{pick(rng, INTERVAL[vocab][:2])}" if chance(rng, 0.3) else ""
        out = [f"{side}胸腔见{grade}{noun}{interval}。"]
    if e.side in _OTHER and chance(rng, 0.6):
        other = _OTHER[e.side]
        negation = pick(rng, SIDE_NEG[vocab]).format(side=mark(_SIDE_WORD[other], f"eside={other}"))
        out.insert(int(rng.integers(2)), negation)
    return out


def _emphysema(f: Findings, rng: np.random.Generator, vocab: str) -> list[str]:
    x = f.emphysema
    grade, where = emphysema_words(x, rng, vocab)
    noun = mark("肺气肿", certainty_tag("emph", x.certainty))
    hedge = pick(rng, HEDGE_PRE[vocab]) if x.certainty == "possible" else ""
    return [f"双肺{hedge}{grade}{noun}{where}。"]


def _resolved(f: Findings, rng: np.random.Generator, vocab: str) -> list[str]:
    free = [lobe for lobe in LOBES if lobe not in {lesion.lobe for lesion in f.lesions}]
    if not free or not chance(rng, 0.3):
        return []
    loc = lobe_words(pick(rng, free), rng, ("full",))
    return [pick(rng, RESOLVED[vocab]).format(loc=loc, noun=mark(pick(rng, ("结节", "磨玻璃影")), "les-"))]


def _body(f: Findings, rng: np.random.Generator, vocab: str) -> list[str]:
    return clinical_body(f, rng, vocab, _VOICE)


_VOICE = ClinicalVoice(_lesion, _resolved, _effusion, _emphysema, NEG_LESION, NEG_EFFUSION, NEG_EMPHYSEMA)


def dictated(f: Findings, rng: np.random.Generator) -> str:
    """对比前片 header, 所见 prose with interval change, hedges, corrections and side negations, then 意见."""
    body = _body(f, rng, T) + list(rng.permutation(DISTRACTORS[T])[: int(rng.integers(3))])
    if f.is_normal:
        body.append(pick(rng, NORMAL[T]))
    return "\n".join([pick(rng, COMPARE[T]).format(date=pick(rng, DATES)), "所见：" + "".join(body),
                      "意见：" + pick(rng, ("详见上述。", "同上。"))])


def followup(f: Findings, rng: np.random.Generator) -> str:
    """Held out: one paragraph with the held-out hedges, corrections and interval words."""
    body = _body(f, rng, H) + list(rng.permutation(DISTRACTORS[H])[: int(rng.integers(2))])
    if f.is_normal:
        body.append(pick(rng, NORMAL[H]))
    return pick(rng, COMPARE[H]).format(date=pick(rng, DATES)) + "".join(body)


TRAIN = {"zh.dictated": dictated}
HELDOUT = {"zh.followup": followup}
