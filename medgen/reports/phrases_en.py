"""English phrase banks. Each bank is split into "train" and "heldout" vocabulary so that held-out
families (`report_families_en`) use wording the training families never produce.

Training vocabulary covers the common radiology terms a reader of real reports must know (opacity, lesion,
subsolid, non-solid, well-defined, pleural fluid, ...); the held-out halves keep rarer synonyms that never
appear in training (tests/test_reports.py lists them), so held-out reports still test unseen wording.

Density keys are `medgen.volume.density_class` values; margins, sides and grades are the
`medgen.findings` vocabularies; lesion kinds are 'nodule' / 'mass'.
"""

from __future__ import annotations

import numpy as np

from medgen.findings import LOBES
from medgen.reports.common import compose_negations, pick
from medgen.reports.spans import mark

LOBE_FULL = {lobe: lobe.replace("_", " ") + " lobe" for lobe in LOBES}  # "right upper lobe"
LOBE_ABBR = {"right_upper": "RUL", "right_middle": "RML", "right_lower": "RLL",
             "left_upper": "LUL", "left_lower": "LLL"}
LOBE_OF_LUNG = {lobe: f"{lobe.split('_')[1]} lobe of the {lobe.split('_')[0]} lung" for lobe in LOBES}
SEGMENTS = {
    "right_upper": ("apical segment of the right upper lobe", "posterior segment of the right upper lobe",
                    "anterior segment of the right upper lobe", "RUL apical segment"),
    "right_middle": ("lateral segment of the right middle lobe", "medial segment of the right middle lobe",
                     "RML lateral segment"),
    "right_lower": ("superior segment of the right lower lobe", "posterior basal segment of the right lower lobe",
                    "lateral basal segment of the right lower lobe", "RLL superior segment"),
    "left_upper": ("apicoposterior segment of the left upper lobe", "anterior segment of the left upper lobe",
                   "lingula", "superior lingular segment", "inferior lingular segment"),
    "left_lower": ("superior segment of the left lower lobe", "anteromedial basal segment of the left lower lobe",
                   "posterior basal segment of the left lower lobe", "LLL superior segment"),
}
# Lobe named without its side, for families that put the lung in a heading ("RIGHT LUNG: ...").
ZONE_ONLY = {"right_upper": ("upper lobe",), "right_middle": ("middle lobe",), "right_lower": ("lower lobe",),
             "left_upper": ("upper lobe", "lingula"), "left_lower": ("lower lobe",)}


def lobe_words(lobe: str, rng: np.random.Generator, styles: tuple[str, ...]) -> str:
    """Lobe name without article, marked as the lesion's location. Styles: 'full', 'abbr', 'of-lung',
    'segment', 'zone'."""
    return mark(_lobe_text(lobe, rng, styles), f"loc={lobe}")


def _lobe_text(lobe: str, rng: np.random.Generator, styles: tuple[str, ...]) -> str:
    style = pick(rng, styles)
    if style == "full":
        return LOBE_FULL[lobe]
    if style == "abbr":
        return LOBE_ABBR[lobe]
    if style == "of-lung":
        return LOBE_OF_LUNG[lobe]
    if style == "segment":
        return pick(rng, SEGMENTS[lobe])
    if style == "zone":
        return pick(rng, ZONE_ONLY[lobe])
    raise ValueError(f"`styles` may hold 'full', 'abbr', 'of-lung', 'segment', 'zone', got {style!r}")


# Density as an adjective before the noun.
DENSITY_ADJ = {
    "train": {"ground-glass": ("ground-glass", "pure ground-glass", "ground glass", "non-solid"),
              "part-solid": ("part-solid", "partly solid", "subsolid", "semi-solid", "mixed solid and ground-glass"),
              "solid": ("solid", "soft tissue", "soft-tissue density")},
    "heldout": {"ground-glass": ("non-solid", "ground glass"),
                "part-solid": ("subsolid", "mixed-attenuation"),
                "solid": ("soft-tissue density", "solid-appearing")},
}
# Density as a phrase after the noun / verb ("... is {phrase}"); may hold {solid}, the
# solid component with its article ("an 8 mm").
DENSITY_POST = {
    "train": {"ground-glass": ("of ground-glass attenuation", "of hazy ground-glass density", "without a solid part"),
              "part-solid": ("with {solid} solid component", "of part-solid attenuation", "with a solid core"),
              "solid": ("of solid attenuation", "of soft-tissue attenuation", "entirely solid")},
    "heldout": {"ground-glass": ("of pure ground-glass attenuation without a solid component",
                                 "non-solid, of ground-glass attenuation"),
                "part-solid": ("subsolid, with {solid} solid component",
                               "of mixed solid and ground-glass attenuation"),
                "solid": ("of soft-tissue attenuation", "uniformly solid")},
}
MARGIN = {
    "train": {"smooth": ("smooth", "well-circumscribed", "well-defined", "circumscribed", "sharp"),
              "lobulated": ("lobulated", "lobular", "microlobulated"),
              "spiculated": ("spiculated", "irregular spiculated", "irregular, spiculated", "spiculated, irregular")},
    "heldout": {"smooth": ("sharply marginated", "well-defined"), "lobulated": ("macrolobulated", "lobular"),
                "spiculated": ("stellate", "irregular spiculated")},
}
NOUN = {
    "train": {"nodule": ("nodule", "pulmonary nodule", "opacity", "lesion", "nodular lesion", "nodular density",
                         "focus", "lung nodule"),
              "mass": ("mass", "mass lesion", "lung mass", "parenchymal mass")},
    "heldout": {"nodule": ("nodular opacity", "opacity", "lesion"), "mass": ("mass lesion", "pulmonary mass")},
}
EFFUSION_GRADE = {
    "train": {"small": ("small", "trace", "small-volume", "minimal", "tiny"), "moderate": ("moderate", "medium"),
              "large": ("large", "large-volume", "substantial", "sizable")},
    "heldout": {"small": ("small-volume", "minimal"), "moderate": ("moderate-volume", "medium-sized"),
                "large": ("large-volume", "massive")},
}
# Amount of "pleural fluid" (held out): "a small amount of pleural fluid on the left".
EFFUSION_AMOUNT = {"small": ("a small amount of", "minimal"), "moderate": ("a moderate amount of", "moderate-volume"),
                   "large": ("a large amount of", "large-volume")}
EFFUSION_SIDE = {  # adjective before "pleural effusion"
    "train": {"left": ("left", "left-sided"), "right": ("right", "right-sided"), "bilateral": ("bilateral",)},
    "heldout": {"left": ("left-sided",), "right": ("right-sided",), "bilateral": ("bilateral",)},
}
EFFUSION_WHERE = {"left": ("on the left",), "right": ("on the right",),  # after the noun (held out)
                  "bilateral": ("bilaterally", "on both sides")}
EMPHYSEMA_GRADE = {
    "train": {"mild": ("mild", "slight", "minimal", "trace"), "moderate": ("moderate",),
              "severe": ("severe", "marked", "extensive")},
    "heldout": {"mild": ("minimal", "slight"), "moderate": ("moderate",), "severe": ("advanced", "marked")},
}
EMPHYSEMA_UPPER = {
    "train": (", upper lobe predominant", " with upper lobe predominance", ", predominantly in the upper lobes",
              ", apical predominant", ", worst in the upper lobes"),
    "heldout": (", most pronounced at the lung apices", " with an upper-zone predominance"),
}
EMPHYSEMA_DIFFUSE = {"train": ("", ", diffuse"), "heldout": ("", " without zonal predominance")}

NEG_LESION = {
    "train": ("No suspicious pulmonary ⟦les-|nodules⟧ or ⟦les-|masses⟧.", "No pulmonary ⟦les-|nodule⟧ or ⟦les-|mass⟧.",
              "No focal pulmonary ⟦les-|nodule⟧.", "Lungs are clear without ⟦les-|nodules⟧.",
              "There are no ⟦les-|nodules⟧.", "No ⟦les-|lung nodules⟧ are identified."),
    "heldout": ("The lungs are clear without focal ⟦les-|opacity⟧.", "Negative for pulmonary ⟦les-|nodules⟧."),
}
NEG_EFFUSION = {
    "train": ("No ⟦eff-|pleural effusion⟧.", "No ⟦eff-|pleural effusion⟧ or pneumothorax.",
              "There is no ⟦eff-|pleural effusion⟧.", "No ⟦eff-|effusion⟧ is seen.",
              "Pleural spaces are clear without ⟦eff-|effusion⟧."),
    "heldout": ("No ⟦eff-|pleural fluid⟧.", "⟦eff-|Pleural effusion⟧ is absent."),
}
NEG_EMPHYSEMA = {
    "train": ("No ⟦emph-|emphysema⟧.", "No evidence of ⟦emph-|emphysema⟧.", "Without ⟦emph-|emphysema⟧."),
    "heldout": ("⟦emph-|Emphysema⟧ is not seen.", "No ⟦emph-|emphysematous change⟧."),
}
# Training negations composed from cues and nouns (held-out sentences filtered out), beside the fixed ones.
_NEG_FRAMES = ("No {n}.", "No {n} is seen.", "No {n} is identified.", "There is no {n}.", "No evidence of {n}.",
               "No definite {n}.", "No significant {n}.", "{N} is not present.", "{N}: none.", "{N} not seen.",
               "Without {n}.", "No {n} detected.")
NEG_LESION["train"] += compose_negations(
    _NEG_FRAMES, ("nodule", "nodules", "pulmonary nodules", "mass", "masses", "suspicious nodule", "lung mass",
                  "focal opacity"), "les-", NEG_LESION["heldout"])
NEG_EFFUSION["train"] += compose_negations(
    _NEG_FRAMES, ("pleural effusion", "pleural effusions", "effusion", "effusions", "pleural fluid",
                  "pleural fluid collection", "fluid in the pleural spaces"), "eff-", NEG_EFFUSION["heldout"])
NEG_EMPHYSEMA["train"] += compose_negations(
    _NEG_FRAMES, ("emphysema", "centrilobular emphysema", "paraseptal emphysema", "pulmonary emphysema"), "emph-",
    NEG_EMPHYSEMA["heldout"])
# Effusion side after the noun in training reports ("small effusion in the left pleural space"); the held-out
# `EFFUSION_WHERE` words stay unseen.
EFFUSION_WHERE_TRAIN = {"left": ("in the left pleural space", "at the left lung base", "of the left hemithorax"),
                        "right": ("in the right pleural space", "at the right lung base", "of the right hemithorax"),
                        "bilateral": ("in both pleural spaces", "at both lung bases", "of both hemithoraces")}
DISTRACTORS = {
    "train": ("Heart size is normal.", "No pericardial effusion.", "No pneumothorax.",
              "Mediastinal and hilar lymph nodes are not enlarged.", "The central airways are patent.",
              "Visualized upper abdomen is unremarkable."),
    "heldout": ("Cardiac silhouette within normal limits.", "Trachea and mainstem bronchi are clear.",
                "Thyroid appears unremarkable.", "Degenerative changes of the thoracic spine.",
                "Pericardium without effusion."),
}
NORMAL = {
    "train": ("⟦norm|No acute cardiopulmonary abnormality⟧.", "⟦norm|Normal CT of the chest⟧.", "⟦norm|The lungs are clear⟧."),
    "heldout": ("⟦norm|Unremarkable chest CT⟧.", "⟦norm|No acute intrathoracic process⟧."),
}
