"""Chinese phrase banks (简体中文). Like the English banks, each is split into "train" and "heldout"
vocabulary; held-out families (`report_families_zh`) draw only from the "heldout" half.
"""

from __future__ import annotations

import numpy as np

from medgen.reports.common import compose_negations, pick
from medgen.reports.phrases_en import LOBE_ABBR
from medgen.reports.spans import mark

LOBE = {"right_upper": "右肺上叶", "right_middle": "右肺中叶", "right_lower": "右肺下叶",
        "left_upper": "左肺上叶", "left_lower": "左肺下叶"}
LOBE_COLLOQ = {"right_upper": "右上肺", "right_middle": "右中肺", "right_lower": "右下肺",
               "left_upper": "左上肺", "left_lower": "左下肺"}
SEGMENTS = {
    "right_upper": ("右肺上叶尖段", "右肺上叶后段", "右肺上叶前段"),
    "right_middle": ("右肺中叶外侧段", "右肺中叶内侧段"),
    "right_lower": ("右肺下叶背段", "右肺下叶外基底段", "右肺下叶后基底段"),
    "left_upper": ("左肺上叶尖后段", "左肺上叶前段", "左肺上叶舌段", "左肺舌段"),
    "left_lower": ("左肺下叶背段", "左肺下叶前内基底段", "左肺下叶后基底段"),
}
ZONE_ONLY = {"right_upper": ("上叶",), "right_middle": ("中叶",), "right_lower": ("下叶",),
             "left_upper": ("上叶", "上叶舌段"), "left_lower": ("下叶",)}


def lobe_words(lobe: str, rng: np.random.Generator, styles: tuple[str, ...]) -> str:
    """Lobe name marked as the lesion's location. Styles: 'full' (右肺上叶), 'colloq' (右上肺), 'segment',
    'zone' (上叶), 'abbr' (RUL)."""
    return mark(_lobe_text(lobe, rng, styles), f"loc={lobe}")


def _lobe_text(lobe: str, rng: np.random.Generator, styles: tuple[str, ...]) -> str:
    style = pick(rng, styles)
    if style == "full":
        return LOBE[lobe]
    if style == "colloq":
        return LOBE_COLLOQ[lobe]
    if style == "segment":
        return pick(rng, SEGMENTS[lobe])
    if style == "zone":
        return pick(rng, ZONE_ONLY[lobe])
    if style == "abbr":
        return LOBE_ABBR[lobe]
    raise ValueError(f"`styles` may hold 'full', 'colloq', 'segment', 'zone', 'abbr', got {style!r}")


# Density as a modifier before the noun (磨玻璃结节) and as a clause (呈软组织密度); {solid} = mm.
DENSITY_ADJ = {
    "train": {"ground-glass": ("磨玻璃", "纯磨玻璃", "磨玻璃密度", "磨玻璃样"),
              "part-solid": ("部分实性", "混杂磨玻璃", "亚实性", "混杂密度", "半实性"),
              "solid": ("实性", "软组织密度", "实质性")},
    "heldout": {"ground-glass": ("毛玻璃", "毛玻璃密度"), "part-solid": ("亚实性", "混合密度"),
                "solid": ("软组织密度",)},
}
DENSITY_POST = {
    "train": {"ground-glass": ("呈磨玻璃密度",),
              "part-solid": ("呈混杂磨玻璃密度，内见实性成分约{solid}mm", "呈部分实性"),
              "solid": ("呈实性", "呈软组织密度")},
    "heldout": {"ground-glass": ("呈毛玻璃样密度，未见实性成分", "密度浅淡，呈毛玻璃样"),
                "part-solid": ("呈亚实性，实性部分约{solid}mm", "密度混杂，呈亚实性"),
                "solid": ("呈均匀软组织密度", "密度均匀，呈软组织密度")},
}
MARGIN = {
    "train": {"smooth": ("边缘光滑", "边界清楚", "边缘光滑，未见分叶及毛刺", "边缘清晰", "边界清晰"),
              "lobulated": ("边缘可见分叶", "呈分叶状", "浅分叶", "可见分叶征"),
              "spiculated": ("边缘可见毛刺", "边缘见毛刺征", "短毛刺", "可见毛刺")},
    "heldout": {"smooth": ("轮廓规整", "边缘锐利"), "lobulated": ("可见浅分叶", "分叶征阳性"),
                "spiculated": ("周围见棘状突起", "见短毛刺")},
}
NOUN = {"train": {"nodule": ("结节", "结节影", "病灶", "小结节", "结节灶"), "mass": ("肿块", "团块影", "肿物", "肿块影")},
        "heldout": {"nodule": ("结节影", "病灶"), "mass": ("团块影", "占位性病变")}}
EFFUSION_GRADE = {"train": {"small": ("少量", "少许", "微量"), "moderate": ("中等量", "中量"), "large": ("大量",)},
                  "heldout": {"small": ("少许",), "moderate": ("中量",), "large": ("大量",)}}
EFFUSION_SIDE = {"train": {"left": ("左侧", "左"), "right": ("右侧", "右"), "bilateral": ("双侧", "两侧")},
                 "heldout": {"left": ("左侧",), "right": ("右侧",), "bilateral": ("两侧",)}}
EMPHYSEMA_GRADE = {"train": {"mild": ("轻度", "轻微"), "moderate": ("中度",), "severe": ("重度", "明显")},
                   "heldout": {"mild": ("轻微",), "moderate": ("中度",), "severe": ("严重",)}}
EMPHYSEMA_UPPER = {"train": ("，以双肺上叶为著", "，以上叶为主"), "heldout": ("，双上肺明显", "，肺尖部为著")}
EMPHYSEMA_DIFFUSE = {"train": ("", "，弥漫分布"), "heldout": ("", "，分布无明显区域差异")}

NEG_LESION = {"train": ("双肺未见明确⟦les-|结节⟧及⟦les-|肿块⟧。", "双肺内未见异常⟦les-|结节影⟧。", "肺内未见⟦les-|结节⟧。",
                        "双肺未见⟦les-|结节⟧。"),
              "heldout": ("两肺野未见实质性⟦les-|病灶⟧。", "肺内未见⟦les-|占位性病变⟧。")}
NEG_EFFUSION = {"train": ("双侧胸腔未见⟦eff-|积液⟧。", "胸腔内未见⟦eff-|积液⟧。", "无⟦eff-|胸腔积液⟧。"),
                "heldout": ("两侧胸膜腔无⟦eff-|积液⟧。", "未见⟦eff-|胸水⟧。")}
NEG_EMPHYSEMA = {"train": ("未见⟦emph-|肺气肿⟧征象。", "无明显⟦emph-|肺气肿⟧。"),
                 "heldout": ("未见明确⟦emph-|肺气肿⟧改变。",)}
# Training negations composed from place, cue and noun (held-out sentences filtered out), beside the fixed ones.
_NEG_CUES = ("未见", "无", "未见明显", "未见明确", "没有", "未发现")
NEG_LESION["train"] += compose_negations(
    tuple(f"{place}{cue}{{n}}。" for place in ("双肺", "两肺", "肺内", "双肺内") for cue in _NEG_CUES),
    ("结节", "肿块", "结节影", "实性结节", "磨玻璃结节"), "les-", NEG_LESION["heldout"])
NEG_EFFUSION["train"] += compose_negations(
    tuple(f"{place}{cue}{{n}}。" for place in ("", "双侧胸腔", "两侧胸腔", "胸腔内", "双侧") for cue in _NEG_CUES),
    ("积液", "胸腔积液", "胸膜积液"), "eff-", NEG_EFFUSION["heldout"])
NEG_EMPHYSEMA["train"] += compose_negations(
    tuple(f"{cue}{{n}}。" for cue in _NEG_CUES) + tuple(f"{cue}{{n}}征象。" for cue in _NEG_CUES),
    ("肺气肿", "小叶中心型肺气肿"), "emph-", NEG_EMPHYSEMA["heldout"])
DISTRACTORS = {
    "train": ("气管及主支气管通畅。", "纵隔内未见肿大淋巴结。", "心脏大小形态未见异常。", "心包未见积液。"),
    "heldout": ("胸壁软组织未见异常。", "所扫层面骨质未见明显破坏。", "心包腔内无积液。", "双侧肺门不大。"),
}
NORMAL = {"train": ("⟦norm|双肺未见明显异常⟧。", "⟦norm|胸部CT平扫未见明显异常⟧。"),
          "heldout": ("⟦norm|心肺膈未见明显异常⟧。", "⟦norm|胸部CT未见异常征象⟧。")}
