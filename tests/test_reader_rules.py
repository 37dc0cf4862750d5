"""The rule reader (medgen.reader.grammar and its parts): report phrasing of many hands read into findings.

The sentences here are written for these tests from the grammar of radiology English and Chinese (they are not the
hand-written evaluation reports, which are never used to write or tune rules).
"""

from __future__ import annotations

import pytest

from medgen.reader.assemble import assemble
from medgen.reader.grammar import read_rules


def read(text: str):
    return assemble(text, read_rules(text).spans)[0]


def summary(findings) -> tuple:
    lesions = tuple(sorted((x.lobe, round(x.diameter_mm), x.type, x.certainty[0]) for x in findings.lesions))
    eff = findings.effusion and (findings.effusion.side, findings.effusion.grade, findings.effusion.certainty[0])
    emph = findings.emphysema and (findings.emphysema.grade, findings.emphysema.distribution,
                                   findings.emphysema.certainty[0])
    return lesions, eff, emph


CASES_EN = [
    # CT-RATE style: location first, "with a diameter of", "on the left", "more prominent in the upper lobes"
    ("In the right lung lower lobe posterobasal segment, a solid nodule with a diameter of 18 mm was observed. "
     "Minimal pleural effusion is seen on the left. Emphysematous changes are observed in both lungs, more "
     "prominent in the upper lobes.",
     ((("right_lower", 18, "solid", "d"),), ("left", "small", "d"), ("mild", "upper", "d"))),
    ("Bilateral pleural effusion is observed, more on the right. No mass or nodule was detected in the lung "
     "parenchyma.", ((), ("bilateral", "small", "d"), None)),
    ("A 9 mm nodule is seen in the lateral segment of the middle lobe. No pleural effusion-thickening was detected.",
     ((("right_middle", 9, "solid", "d"),), None, None)),
    # US dictation: prior sizes, series/image references, numbered impression restating the findings
    ("FINDINGS: There is a 1.2 x 0.8 cm nodule in the superior segment of the left lower lobe (series 2, image 85), "
     "previously measuring 0.9 x 0.6 cm.\nIMPRESSION:\n1. Enlarging 1.2 cm left lower lobe nodule.",
     ((("left_lower", 12, "solid", "d"),), None, None)),
    ("The right lower lobe nodule has increased to 9 mm from 7 mm. No effusion.",
     ((("right_lower", 9, "solid", "d"),), None, None)),
    ("Nodule in the RUL measures 9 mm, compared to 7 mm in 2022.", ((("right_upper", 9, "solid", "d"),), None, None)),
    ("Spiculated mass in the left upper lobe measuring approximately 30 mm. A 1.5 cm hypodense lesion in the liver, "
     "likely a cyst. 1.8 cm left thyroid nodule. Subcarinal lymph node measures 14 mm in short axis.",
     ((("left_upper", 30, "solid", "d"),), None, None)),
    ("Part-solid nodule in the right upper lobe measuring 2.7 x 2.1 cm (series 3, image 45), with a solid component "
     "of 9 mm.", ((("right_upper", 27, "part-solid", "d"),), None, None)),
    ("Ground-glass nodule in the RLL measuring 14 mm without a solid component.",
     ((("right_lower", 14, "ground-glass", "d"),), None, None)),
    ("Nodules: 4 mm RUL (4/55), 6 mm LLL (4/120).",
     ((("left_lower", 6, "solid", "d"), ("right_upper", 4, "solid", "d")), None, None)),
    ("Multiple bilateral pulmonary nodules, the largest measuring 8 mm in the right upper lobe.",
     ((("right_upper", 8, "solid", "d"),), None, None)),
    ("Millimetric nonspecific nodules are observed in both lungs. No effusion.", ((), None, None)),
    # negation, hedging, history and hypothesis
    ("The lungs are clear without focal consolidation, suspicious nodule, or mass. No suspicious pulmonary nodules.",
     ((), None, None)),
    ("No pulmonary nodule, pleural effusion or emphysema. Small pericardial effusion.", ((), None, None)),
    ("A 4 mm nodule in the RML cannot be excluded; this may be a vessel seen end-on. Likely small right pleural "
     "effusion.", ((("right_middle", 4, "solid", "p"),), ("right", "small", "p"), None)),
    ("There is a 9mm nodule in the right lower lobe (image 45), not present previously.",
     ((("right_lower", 9, "solid", "d"),), None, None)),
    ("The previously seen 6 mm right upper lobe nodule is no longer visualized. The right pleural effusion has "
     "resolved.", ((), None, None)),
    ("INDICATION: Evaluate for pleural effusion. History of right upper lobe nodule.\nFINDINGS: Lungs are clear.",
     ((), None, None)),
    ("History: cough, 2 cm RUL nodule on outside CT.\nThere is a 31 mm mass in the left lower lobe. Large left "
     "pleural effusion.", ((("left_lower", 31, "solid", "d"),), ("left", "large", "d"), None)),
    ("Opacity in the left upper lobe suspicious for a 7 mm nodule.", ((("left_upper", 7, "solid", "p"),), None, None)),
    # effusion side and grade
    ("Moderate right and small left pleural effusions.", ((), ("bilateral", "moderate", "d"), None)),
    ("Small right pleural effusion, decreased from moderate.", ((), ("right", "small", "d"), None)),
    ("Sizable pleural effusion at the left lung base.", ((), ("left", "large", "d"), None)),
    ("Small bilateral pleural effusions, right greater than left.", ((), ("bilateral", "small", "d"), None)),
    # emphysema grade and distribution
    ("Mild centrilobular emphysema, most pronounced in the upper lobes.", ((), None, ("mild", "upper", "d"))),
    ("Marked emphysema without zonal predominance.", ((), None, ("severe", "diffuse", "d"))),
    ("Questionable slight emphysema at the lung apices.", ((), None, ("mild", "upper", "p"))),
    # corrections, headings, structured fields, anaphora
    ("Solid 11 mm nodule in the LUL, sorry, lower lobe of the right lung.", ((("right_lower", 11, "solid", "d"),),
                                                                            None, None)),
    ("Right upper lobe: 2.1 cm spiculated mass.\nLeft lower lobe: no nodule.",
     ((("right_upper", 21, "solid", "d"),), None, None)),
    ("RIGHT LUNG: The lower lobe contains a 12 mm ground glass nodule.\nLEFT LUNG: Clear.",
     ((("right_lower", 12, "ground-glass", "d"),), None, None)),
    ("LEFT LUNG: The lower lobe contains a 12 mm ground glass nodule.", ((("left_lower", 12, "ground-glass", "d"),),
                                                                        None, None)),
    ("There is a nodule in the LLL. It measures 9 mm. It is solid.\nEmphysema: none\nPleural effusion: none.",
     ((("left_lower", 9, "solid", "d"),), None, None)),
    ("Nodule 1: Location: LUL, apicoposterior segment. Size: 8 x 6 mm. Type: solid.\nNodule 2: Location: RLL. "
     "Size: 13 mm. Type: part-solid.",
     ((("left_upper", 8, "solid", "d"), ("right_lower", 13, "part-solid", "d")), None, None)),
    ("A 6 mm solid nodule in the apical segment and an 11 mm ground-glass nodule in the posterior segment of the "
     "right upper lobe.", ((("right_upper", 6, "solid", "d"), ("right_upper", 11, "ground-glass", "d")), None, None)),
    # an opacity is a lesion when measured, not when patchy or linear
    ("Patchy opacity in the left lower lobe, likely atelectasis. Linear opacity in the lingula.", ((), None, None)),
    ("There is a ground glass opacity in the RUL. On the current study it spans 2.2 x 1.7 cm.",
     ((("right_upper", 22, "ground-glass", "d"),), None, None)),
    ("There is an opacity in the RUL. A 5 mm nodule is seen in the LLL.", ((("left_lower", 5, "solid", "d"),), None,
                                                                         None)),
    ("Fluid is seen in the right pleural space. L>R bibasilar atelectasis.", ((), ("right", "small", "d"), None)),
    ("CLINICAL INFORMATION: ?lung cancer.\nFINDINGS: There is a 45 x 38 mm spiculated mass in the left upper lobe. "
     "Moderate left pleural effusion. Emphysema.\nCONCLUSION: Left upper lobe mass with moderate left effusion, "
     "highly suspicious for bronchogenic carcinoma.",
     ((("left_upper", 45, "solid", "d"),), ("left", "moderate", "d"), ("mild", "diffuse", "d"))),
    ("A right hilar mass measuring 4 cm. There is a 2 cm mass in the anterior mediastinum.", ((), None, None)),
    ("Equivocal 89 mm soft-tissue density mass lesion in the LLL. Suspicious marked emphysema.",
     ((("left_lower", 89, "solid", "p"),), None, ("severe", "diffuse", "p"))),
    ("Lungs: spiculated, irregular parenchymal mass without a solid part in the RUL, measuring 3.7 cm.",
     ((("right_upper", 37, "ground-glass", "d"),), None, None)),
    ("A roughly two centimeter subsolid nodule in the lingula.", ((("left_upper", 20, "part-solid", "d"),), None,
                                                                  None)),
]

CASES_ZH = [
    ("检查所见：右肺上叶尖段见一磨玻璃结节，大小约8mm×6mm。左肺下叶背段见一实性结节，直径约9mm，边缘可见毛刺。"
     "双肺气肿，以双上肺为著。双侧胸腔未见积液。\n诊断意见：1. 右肺上叶尖段磨玻璃结节。2. 左肺下叶背段实性结节，考虑恶性可能。",
     ((("left_lower", 9, "solid", "d"), ("right_upper", 8, "ground-glass", "d")), None, ("mild", "upper", "d"))),
    ("右肺下叶后基底段见软组织肿块，范围约45mm×38mm。右侧胸腔少量积液。左侧胸腔未见积液。",
     ((("right_lower", 45, "solid", "d"),), ("right", "small", "d"), None)),
    ("双侧胸腔积液，左侧为著，左侧为中量。", ((), ("bilateral", "moderate", "d"), None)),
    ("左侧胸腔积液较前增多（原为少量），现为中量。", ((), ("left", "moderate", "d"), None)),
    ("右肺上叶见一实性结节，直径约8mm，较前增大（原约6mm）。", ((("right_upper", 8, "solid", "d"),), None, None)),
    ("与前片对比，右肺中叶结节由8mm增大至12mm，呈实性。", ((("right_middle", 12, "solid", "d"),), None, None)),
    ("原右肺中叶结节已吸收。左肺下叶新见磨玻璃结节，大小约6mm。", ((("left_lower", 6, "ground-glass", "d"),), None, None)),
    ("左肺下叶外基底段可疑小结节，直径约4mm。左侧胸腔积液待排。",
     ((("left_lower", 4, "solid", "p"),), ("left", "small", "p"), None)),
    ("右侧胸腔少量积液不除外。考虑轻度肺气肿可能。", ((), ("right", "small", "p"), ("mild", "diffuse", "p"))),
    ("右肺上叶部分实性结节考虑MIA可能，大小约12mm。", ((("right_upper", 12, "part-solid", "d"),), None, None)),
    ("双肺多发小结节，较大者位于右肺下叶，直径约5mm。", ((("right_lower", 5, "solid", "d"),), None, None)),
    ("双肺多发结节：右肺上叶约4mm，左肺下叶约6mm。",
     ((("left_lower", 6, "solid", "d"), ("right_upper", 4, "solid", "d")), None, None)),
    ("甲状腺右叶见低密度结节，大小约1.2cm。心包少量积液。纵隔内见肿大淋巴结，短径约1.5cm。", ((), None, None)),
    ("右肺下叶见一结节影。该病灶大小约24mm×20mm，呈磨玻璃密度。", ((("right_lower", 24, "ground-glass", "d"),), None,
                                                          None)),
    ("肺结节/肿块：无。\n胸腔积液：双侧，少许。\n肺气肿：中度。", ((), ("bilateral", "small", "d"), ("moderate", "diffuse", "d"))),
    ("两肺透亮度增高，分布无明显区域差异，符合轻度肺气肿。", ((), None, ("mild", "diffuse", "d"))),
    ("纯磨玻璃结节位于右肺上叶，大小约9mm，未见实性成分。", ((("right_upper", 9, "ground-glass", "d"),), None, None)),
    ("RLL见一混合密度mass，约54mm。", ((("right_lower", 54, "part-solid", "d"),), None, None)),
    ("不除外右肺中叶，应为左肺上叶前段软组织密度结节影，约15mm。", ((("left_upper", 15, "solid", "p"),), None, None)),
    ("右肺上叶尖段似见一小结节影，直径约3mm。双肺中度肺气肿，以两上叶为主。",
     ((("right_upper", 3, "solid", "p"),), None, ("moderate", "upper", "d"))),
    ("左下肺背段小结节，直径约6mm，性质待定。右侧少量胸水。", ((("left_lower", 6, "solid", "d"),), ("right", "small", "d"),
                                               None)),
    ("右肺中叶见斑片状磨玻璃影，考虑炎性病变。右肺下叶见磨玻璃影，范围约22mm×15mm。",
     ((("right_lower", 22, "ground-glass", "d"),), None, None)),
    ("右肺下叶见半实性结节（18毫米）。旧片左肺下叶结节现未再显示。肺气肿：明显，以双肺上叶为著。",
     ((("right_lower", 18, "part-solid", "d"),), None, ("severe", "upper", "d"))),
    ("肺窗：左肺上叶见结节影，约26×19mm。\n纵隔窗：纵隔内未见肿大淋巴结；双侧胸腔见微量积液。",
     ((("left_upper", 26, "solid", "d"),), ("bilateral", "small", "d"), None)),
    ("胸腔积液（-）。双侧胸腔积液（右侧中量，左侧少量）。", ((), ("bilateral", "moderate", "d"), None)),
    ("左肺上叶舌段见一混杂磨玻璃结节，大小约十二毫米。", ((("left_upper", 12, "part-solid", "d"),), None, None)),
]


@pytest.mark.parametrize("text,expected", CASES_EN + CASES_ZH)
def test_rule_reader_reads_phrasing_of_many_hands(text, expected):
    assert summary(read(text)) == expected
