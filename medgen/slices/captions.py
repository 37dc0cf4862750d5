"""Captions of one CT slice in English and Chinese, written from what that slice shows.

The input is the slice's findings dict (`medgen.slices.data.SliceSample.findings`): the lesions the slice
cuts with their in-plane size, the effusion side seen in the slice, emphysema. Words come from the
report writer's training phrase banks (first entry of each), so captions use the vocabulary the domain
text encoder was pretrained on.

    EN: "Axial CT slice: a 24 mm part-solid nodule in the right upper lobe; right pleural effusion."
    ZH: "轴位CT层面：右肺上叶见部分实性结节，大小约24 mm；右侧胸腔积液。"
"""

from __future__ import annotations

from medgen.reports import phrases_en as en
from medgen.reports import phrases_zh as zh

VIEW_EN = {"axial": "Axial CT slice", "coronal": "Coronal CT slice"}
VIEW_ZH = {"axial": "轴位CT层面", "coronal": "冠状位CT层面"}
NORMAL_EN = "normal lungs, no nodule, mass or pleural effusion"
NORMAL_ZH = "双肺未见明显异常，未见结节、肿块及胸腔积液"
MASS_MM = 30  # nodule below, mass from here (the phantom's and the report writer's convention)


def _size(lesion: dict) -> int:
    return int(round(lesion["size_mm"]))


def _kind(size: int) -> str:
    return "mass" if size >= MASS_MM else "nodule"


def _article(size: int) -> str:
    """'an' before numbers read with a leading vowel sound (8, 11, 18, 80-89, 800...)."""
    text = str(size)
    return "an" if text.startswith("8") or text in ("11", "18") else "a"


def caption_en(findings: dict) -> str:
    """English caption of a slice findings dict (see module docstring)."""
    parts = []
    for lesion in findings["lesions"]:
        size = _size(lesion)
        kind = en.NOUN["train"][_kind(size)][0]
        density = en.DENSITY_ADJ["train"][lesion["type"]][0]
        parts.append(f"{_article(size)} {size} mm {density} {kind} in the {en.LOBE_FULL[lesion['lobe']]}")
    if findings["effusion"] == "bilateral":
        parts.append("bilateral pleural effusions")
    elif findings["effusion"]:
        parts.append(f"{en.EFFUSION_SIDE['train'][findings['effusion']][0]} pleural effusion")
    if findings["emphysema"]:
        parts.append(f"{en.EMPHYSEMA_GRADE['train'][findings['emphysema']][0]} emphysema")
    return f"{VIEW_EN[findings['view']]}: {'; '.join(parts) if parts else NORMAL_EN}."


def caption_zh(findings: dict) -> str:
    """Chinese caption of a slice findings dict (see module docstring)."""
    parts = []
    for lesion in findings["lesions"]:
        size = _size(lesion)
        kind = zh.NOUN["train"][_kind(size)][0]
        density = zh.DENSITY_ADJ["train"][lesion["type"]][0]
        parts.append(f"{zh.LOBE[lesion['lobe']]}见{density}{kind}，大小约{size} mm")
    if findings["effusion"]:
        parts.append(f"{zh.EFFUSION_SIDE['train'][findings['effusion']][0]}胸腔积液")
    if findings["emphysema"]:
        parts.append(f"{zh.EMPHYSEMA_GRADE['train'][findings['emphysema']][0]}肺气肿")
    return f"{VIEW_ZH[findings['view']]}：{'；'.join(parts) if parts else NORMAL_ZH}。"
