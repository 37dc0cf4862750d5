"""Chinese phrasing families (简体中文): each renders `Findings` into one report layout.

Same contract as `report_families_en`: functions ``(findings, rng) -> str`` in `TRAIN` / `HELDOUT`;
held-out families use other layouts (左肺/右肺 headings, 该结节 follow-up sentences, English
abbreviations mixed into Chinese) and the "heldout" vocabulary.
"""

from __future__ import annotations

import numpy as np

from medgen.findings import Effusion, Emphysema, Findings
from medgen.reports.common import (
    Measured,
    chance,
    measure_all,
    negations,
    numbered,
    pick,
    size_text,
    some_of,
    worded_kind,
)
from medgen.reports.phrases_zh import (
    DENSITY_ADJ,
    DENSITY_POST,
    DISTRACTORS,
    EFFUSION_GRADE,
    EFFUSION_SIDE,
    EMPHYSEMA_DIFFUSE,
    EMPHYSEMA_GRADE,
    EMPHYSEMA_UPPER,
    LOBE,
    MARGIN,
    NEG_EFFUSION,
    NEG_EMPHYSEMA,
    NEG_LESION,
    NORMAL,
    NOUN,
    lobe_words,
)
from medgen.reports.spans import certainty_tag, mark, visible

T, H = "train", "heldout"
_CIRCLED = "①②③④⑤⑥⑦⑧⑨"


def lesion_words(m: Measured, rng: np.random.Generator, vocab: str, repeat: bool = False) -> dict:
    """Density modifier ('d') and clause ('post'), noun ('n') and margin clause ('mg') of one lesion, marked;
    `repeat`: the noun restates a lesion already described (a 诊断意见 line), tagged 'les^'."""
    return {"d": mark(pick(rng, DENSITY_ADJ[vocab][m.density]), f"type={m.density}"),
            "n": mark(pick(rng, NOUN[vocab][worded_kind(m, rng, vocab)]), "les^" if repeat else certainty_tag("les", m.lesion.certainty)),
            "post": mark(pick(rng, DENSITY_POST[vocab][m.density]).format(solid=m.solid_mm), f"type={m.density}"),
            "mg": mark(pick(rng, MARGIN[vocab][m.margin]), f"margin={m.margin}")}


def effusion_words(e: Effusion, rng: np.random.Generator, vocab: str = T) -> tuple[str, str]:
    """(side, grade) words, marked."""
    return (mark(pick(rng, EFFUSION_SIDE[vocab][e.side]), f"eside={e.side}"),
            mark(pick(rng, EFFUSION_GRADE[vocab][e.grade]), f"egrade={e.grade}"))


def emphysema_words(x: Emphysema, rng: np.random.Generator, vocab: str = T) -> tuple[str, str]:
    """(grade, distribution clause) words, marked (the clause keeps its leading '，' outside the mark)."""
    where = pick(rng, EMPHYSEMA_UPPER[vocab] if x.upper_predominant else EMPHYSEMA_DIFFUSE[vocab])
    body = where.lstrip("，")
    return (mark(pick(rng, EMPHYSEMA_GRADE[vocab][x.grade]), f"xgrade={x.grade}"),
            where[:len(where) - len(body)] + mark(body, f"xdist={x.distribution}"))


def _negations(f: Findings, rng: np.random.Generator, vocab: str, p: float = 0.7) -> list[str]:
    return negations(f, rng, NEG_LESION[vocab], NEG_EFFUSION[vocab], NEG_EMPHYSEMA[vocab], p)


def _distractors(rng: np.random.Generator, vocab: str, k_max: int = 2) -> list[str]:
    return some_of(rng, DISTRACTORS[vocab], k_max)


def _diagnosis(f: Findings, ms: list[Measured], rng: np.random.Generator) -> list[str]:
    """Numbered 诊断意见 lines (training vocabulary); a normal-study sentence when nothing is found."""
    items = []
    for m in ms:
        w = lesion_words(m, rng, T, repeat=True)
        advice = pick(rng, ("", "，建议随访复查", "，建议进一步检查")) if m.kind == "nodule" else "，建议进一步检查"
        items.append(f"{mark(LOBE[m.lobe], f'loc={m.lobe}')}{w['d']}{w['n']}{advice}。")
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng)
        items.append(f"{side}胸腔{grade}⟦eff|积液⟧。")
    if f.emphysema:
        items.append(f"{emphysema_words(f.emphysema, rng)[0]}⟦emph|肺气肿⟧。")
    return numbered(items) if items else [pick(rng, NORMAL[T])]


# ---------------------------------------------------------------- training families
def standard(f: Findings, rng: np.random.Generator) -> str:
    """检查所见 / 诊断意见; '右肺上叶见一实性结节，大小约12×10mm，边缘光滑。'"""
    ms, body = measure_all(f, rng), []
    for m in ms:
        w = lesion_words(m, rng, T)
        body.append(f"{mark(LOBE[m.lobe], f'loc={m.lobe}')}见一{w['d']}{w['n']}，大小约{size_text(m, pick(rng, ('zh-axb', 'zh-mm')))}，"
                    f"{w['mg']}。")
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng)
        body.append(pick(rng, (f"{side}胸腔见{grade}⟦eff|积液⟧。", f"{side}胸腔{grade}⟦eff|积液⟧。")))
    if f.emphysema:
        grade, where = emphysema_words(f.emphysema, rng)
        body.append(f"双肺{grade}⟦emph|肺气肿⟧{where}。")
    body += _negations(f, rng, T) + _distractors(rng, T)
    head = pick(rng, ("检查所见：", "影像所见："))
    return "\n".join([head, "".join(body), "诊断意见：", *_diagnosis(f, ms, rng)])


def narrative(f: Findings, rng: np.random.Generator) -> str:
    """No headings: '胸部CT平扫示：右肺上叶可见一枚磨玻璃结节影，直径约1.2cm，边界清楚。…余未见明显异常。'"""
    out = [pick(rng, ("胸部CT平扫示：", "胸部CT平扫："))]
    for m in measure_all(f, rng):
        w = lesion_words(m, rng, T)
        size = size_text(m, pick(rng, ("zh-cm", "zh-haomi", "zh-limi")))
        shadow = "" if visible(w["n"]).endswith("影") else "影"
        out.append(f"{lobe_words(m.lobe, rng, ('full', 'segment'))}可见一枚{w['d']}{w['n']}{shadow}，直径约{size}，{w['mg']}。")
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng)
        out.append(f"{side}胸腔内可见{grade}⟦eff|积液⟧。")
    if f.emphysema:
        grade, where = emphysema_words(f.emphysema, rng)
        out.append(f"双肺透亮度增高，呈{grade}⟦emph|肺气肿⟧改变{where}。")
    out += _negations(f, rng, T)
    out.append("余未见明显异常。" if not f.is_normal else pick(rng, NORMAL[T]))
    return "".join(out)


def terse(f: Findings, rng: np.random.Generator) -> str:
    """One short line per finding: '右上肺实性结节，12mm，边缘光滑。' / '右侧少量胸腔积液。'"""
    out = []
    for m in measure_all(f, rng):
        w = lesion_words(m, rng, T)
        out.append(f"{lobe_words(m.lobe, rng, ('colloq', 'full'))}{w['d']}{w['n']}，"
                   f"{size_text(m, pick(rng, ('zh-mm', 'zh-axb')))}，{w['mg']}。")
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng)
        out.append(f"{side}{grade}⟦eff|胸腔积液⟧。")
    if f.emphysema:
        grade, where = emphysema_words(f.emphysema, rng)
        out.append(f"{grade}⟦emph|肺气肿⟧{where}。")
    out += _negations(f, rng, T, p=0.5)
    if f.is_normal:
        out.append(pick(rng, NORMAL[T]))
    return "\n".join(out)


def windows(f: Findings, rng: np.random.Generator) -> str:
    """肺窗 / 纵隔窗 paragraphs; the effusion is read on the mediastinal window."""
    lung = []
    for m in measure_all(f, rng):
        w = lesion_words(m, rng, T)
        lung.append(f"{mark(LOBE[m.lobe], f'loc={m.lobe}')}见{w['n']}，约{size_text(m, pick(rng, ('zh-axb', 'zh-axb-cm')))}，{w['post']}，"
                    f"{w['mg']}。")
    if f.emphysema:
        grade, where = emphysema_words(f.emphysema, rng)
        lung.append(f"双肺{grade}⟦emph|肺气肿⟧{where}。")
    if not lung:
        lung.append(pick(rng, ("双肺纹理清晰，未见明确⟦les-|结节⟧及⟦les-|肿块⟧。", *NEG_LESION[T])))
    media = ["心影不大，纵隔内未见肿大淋巴结"]
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng)
        media.append(f"{side}胸腔见{grade}⟦eff|积液⟧")
    elif chance(rng, 0.7):
        media.append("双侧胸腔未见⟦eff-|积液⟧")
    lines = [f"肺窗：{''.join(lung)}", f"纵隔窗：{'；'.join(media)}。"]
    if chance(rng, 0.6):
        lines += ["诊断：", *_diagnosis(f, [], rng)] if f.is_normal else ["诊断：详见上述。"]
    return "\n".join(lines)


def bracketed(f: Findings, rng: np.random.Generator) -> str:
    """【影像所见】/【影像诊断】 with segment names and a '呈…密度' clause."""
    ms, body = measure_all(f, rng), []
    for m in ms:
        w = lesion_words(m, rng, T)
        body.append(f"{lobe_words(m.lobe, rng, ('segment', 'full'))}见一{w['n']}，"
                    f"大小约{size_text(m, pick(rng, ('zh-mm-mm', 'zh-axb-cm')))}，{w['post']}，{w['mg']}。")
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng)
        body.append(f"{side}胸膜腔可见{grade}⟦eff|积液⟧，邻近肺组织受压。")
    if f.emphysema:
        grade, where = emphysema_words(f.emphysema, rng)
        body.append(f"双肺见{grade}小叶中心型⟦emph|肺气肿⟧{where}。")
    body += _negations(f, rng, T) + _distractors(rng, T)
    return "\n".join(["【影像所见】", "".join(body), "【影像诊断】", *_diagnosis(f, ms, rng)])


def listed(f: Findings, rng: np.random.Generator) -> str:
    """影像表现 listing lesions with parenthesised details: '①右肺上叶（实性结节，12×10mm，边缘光滑）'."""
    items = []
    for m in measure_all(f, rng):
        w = lesion_words(m, rng, T)
        items.append(f"{mark(LOBE[m.lobe], f'loc={m.lobe}')}（{w['d']}{w['n']}，{size_text(m, pick(rng, ('zh-axb', 'zh-cm')))}，{w['mg']}）")
    out = []
    if len(items) > 1:
        out.append(f"肺内可见{'两三'[len(items) - 2] if len(items) < 4 else len(items)}处病灶，分别位于："
                   + "；".join(f"{_CIRCLED[i]}{item}" for i, item in enumerate(items)) + "。")
    elif items:
        lobe, details = items[0].split("（", 1)
        out.append(f"{lobe}可见一处病灶（{details}。")
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng)
        out.append(f"另见{side}胸腔{grade}⟦eff|积液⟧。")
    if f.emphysema:
        grade, where = emphysema_words(f.emphysema, rng)
        out.append(f"伴{grade}⟦emph|肺气肿⟧{where}。")
    out += _negations(f, rng, T) + _distractors(rng, T)
    if f.is_normal:
        out.append(pick(rng, NORMAL[T]))
    return "影像表现：\n" + "\n".join(out)


def key_value(f: Findings, rng: np.random.Generator) -> str:
    """Structured fields: '病灶1：部位 右肺上叶；大小 12×10mm；密度 实性；边缘 光滑。' / '胸腔积液：无。'"""
    lines = ["肺结节/肿块：" if f.lesions else "肺⟦les-|结节/肿块⟧：无。"]
    margin_word = {"smooth": "光滑", "lobulated": "分叶", "spiculated": "毛刺"}
    for i, m in enumerate(measure_all(f, rng), 1):
        w = lesion_words(m, rng, T)
        lines.append(f"病灶{i}：类型 {w['n']}；部位 {lobe_words(m.lobe, rng, ('full', 'segment'))}；"
                     f"大小 {size_text(m, pick(rng, ('zh-axb', 'zh-mm')))}；密度 {w['d']}；边缘 {mark(margin_word[m.margin], f'margin={m.margin}')}。")
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng)
        lines.append(f"⟦eff|胸腔积液⟧：{side}，{grade}。")
    else:
        lines.append("⟦eff-|胸腔积液⟧：无。")
    if f.emphysema:
        grade, where = emphysema_words(f.emphysema, rng)
        lines.append(f"⟦emph|肺气肿⟧：{grade}{where}。")
    else:
        lines.append("⟦emph-|肺气肿⟧：无。")
    return "\n".join(lines)


# ---------------------------------------------------------------- held-out families
def lung_by_lung(f: Findings, rng: np.random.Generator) -> str:
    """右肺 / 左肺 / 胸膜 / 其他 headings; lobes named without side ('右肺：上叶见…')."""
    lines = []
    for side, name in (("right", "右肺"), ("left", "左肺")):
        said = []
        for m in measure_all(Findings(lesions=[lesion for lesion in f.lesions if lesion.side == side]), rng):
            w = lesion_words(m, rng, H)
            style = pick(rng, ("zh-haomi", "zh-limi", "zh-axb"))
            said.append(f"{lobe_words(m.lobe, rng, ('zone',))}见{w['d']}{w['n']}，"
                        f"{'大小' if style == 'zh-axb' else '最大径'}约{size_text(m, style)}，{w['mg']}")
        if said and chance(rng, 0.5):
            said.append("余肺叶未见异常")
        lines.append(f"{name}：" + ("；".join(said) + "。" if said else pick(rng, ("未见明显异常。", "清晰。"))))
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng, H)
        lines.append(f"胸膜：{side}{grade}{mark(pick(rng, ('胸水', '胸膜腔积液')), 'eff')}。")
    else:
        lines.append("胸膜：" + pick(rng, NEG_EFFUSION[H]))
    other = []
    if f.emphysema:
        grade, where = emphysema_words(f.emphysema, rng, H)
        other.append(f"两肺{grade}⟦emph|肺气肿⟧{where}。")
    other += _distractors(rng, H)
    lines.append("其他：" + ("".join(other) or "无特殊。"))
    return "\n".join(lines)


def anaphoric(f: Findings, rng: np.random.Generator) -> str:
    """'右肺中叶外侧段见一结节影。该病灶大小约1.2×1.0cm，呈均匀软组织密度，周围见棘状突起。'"""
    out = []
    for m in measure_all(f, rng):
        w = lesion_words(m, rng, H)
        out.append(f"{lobe_words(m.lobe, rng, ('segment', 'full'))}见一{w['n']}。")
        style = pick(rng, ("zh-axb-cm", "zh-limi", "zh-mm-mm"))
        measure_word = "长径约" if style == "zh-limi" else "大小约"
        out.append(f"{pick(rng, ('该病灶', '该' + visible(w['n']), '其'))}{measure_word}{size_text(m, style)}，"
                   f"{w['post']}，{w['mg']}。")
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng, H)
        # "符合"/"为", not "考虑": 考虑 is a hedge in the training families and the hand-written truth
        out.append(f"{side}胸腔内可见{grade}液体密度影，为⟦eff|胸腔积液⟧。")
    if f.emphysema:
        grade, where = emphysema_words(f.emphysema, rng, H)
        out.append(f"两肺透亮度增高，肺纹理稀疏，符合{grade}⟦emph|肺气肿⟧{where}。")
    out += _negations(f, rng, H) + _distractors(rng, H)
    if f.is_normal:
        out.append(pick(rng, NORMAL[H]))
    return "".join(out)


_CODE_MIXED_DENSITY = {"ground-glass": ("pGGN", "GGN"), "part-solid": ("mGGN", "part-solid结节"),
                       "solid": ("实性结节", "solid结节")}


def code_mixed(f: Findings, rng: np.random.Generator) -> str:
    """English abbreviations mixed into Chinese: 'RUL见一mGGN，约15×12mm，可见浅分叶。' + 印象."""
    body = []
    for m in measure_all(f, rng):
        mg = mark(pick(rng, MARGIN[H][m.margin]), f"margin={m.margin}")
        size = size_text(m, pick(rng, ("zh-axb", "zh-mm", "zh-cm")))
        noun = (mark(pick(rng, _CODE_MIXED_DENSITY[m.density]), f"les,type={m.density}") if m.kind == "nodule"
                else mark(pick(rng, DENSITY_ADJ[H][m.density]), f"type={m.density}") + mark("mass", "les"))
        body.append(f"{lobe_words(m.lobe, rng, ('abbr',))}见一{noun}，约{size}，{mg}。")
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng, H)
        body.append(f"{side}⟦eff|胸腔积液⟧（{grade}）。")
    if f.emphysema:
        grade, where = emphysema_words(f.emphysema, rng, H)
        body.append(f"⟦emph|肺气肿⟧（{grade}）{where}。")
    body += _negations(f, rng, H, p=0.5) + _distractors(rng, H, 1)
    impression = "详见上述。" if not f.is_normal else pick(rng, NORMAL[H])
    return f"Findings：{''.join(body) or '无特殊。'}\n印象：{impression}"


TRAIN = {"zh.standard": standard, "zh.narrative": narrative, "zh.terse": terse, "zh.windows": windows,
         "zh.bracketed": bracketed, "zh.listed": listed, "zh.key_value": key_value}
HELDOUT = {"zh.lung_by_lung": lung_by_lung, "zh.anaphoric": anaphoric, "zh.code_mixed": code_mixed}
