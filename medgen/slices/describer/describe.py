"""`describe`: a CT volume -> what the slice reader sees on its key axial slices (text + findings JSON).

Key slices: with a label map (``<name>_labels.nii.gz`` from `medgen generate`, or given) its key slice (largest
lesion cross-section, else most fluid, else mid-lung) and the lung-level slices around it; without one,
`n_slices` axial slices evenly spaced over the lung's extent (lung = < -500 HU inside the body). Every slice
is asked every question (`medgen.slices.describer.questions`); a lesion is reported from the slice that answers
the largest size, effusion sides are the union over slices. The reader sees each slice over the volume's
whole in-plane field of view resized to its input (trained at 288-352 mm over 128 px).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medgen.slices.data import _display
from medgen.slices.describer.model import SliceReader
from medgen.slices.describer.questions import KEYS, QUESTIONS, findings_from_answers
from medgen.volume import Volume

MAX_SLICES = 64  # slices read per volume (each is one pass of the reader)


@dataclass
class Description:
    """What the reader saw: one record per slice (z in mm, answers, parsed findings) and the summary."""

    slices: list[dict]
    summary: dict
    text: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"synthetic_reader": "medgen slice reader (LLaVA-style)", "summary": self.summary, "text": self.text,
                "slices": self.slices, "warnings": self.warnings}


def lung_slices(volume: Volume, n: int) -> list[int]:
    """`n` axial indices evenly spaced over the slices holding lung (< -500 HU inside the body)."""
    from scipy import ndimage as ndi

    hu = np.asarray(volume.array)
    body = ndi.binary_fill_holes(hu > -500, structure=np.ones((3, 3, 1), bool))
    lung_area = ((hu < -500) & body).sum(axis=(0, 1))
    rows = np.flatnonzero(lung_area >= 0.02 * hu.shape[0] * hu.shape[1])
    if not rows.size:
        raise ValueError("no lung found in the volume (no axial slice with air inside the body)")
    return sorted({int(round(v)) for v in np.linspace(rows[0], rows[-1], n + 2)[1:-1]})


def label_slices(labels: Volume, n: int) -> list[int]:
    """The label map's key slice and `n` - 1 lung-level slices evenly spaced around it."""
    from medgen.layout.labels import lesion_ids
    from medgen.slices.data import key_slice_index, lung_indices

    lab = np.rint(np.asarray(labels.array)).astype(np.int32)
    key = key_slice_index(lab, lesion_ids(lab))
    lung = lung_indices(lab)
    others = [int(round(v)) for v in np.linspace(lung[0], lung[-1], n + 1)[1:-1]] if lung.size and n > 1 else []
    return sorted({key, *others})


EFFUSION_ZH = {"right": "右侧", "left": "左侧", "bilateral": "双侧"}


def summarize(slices: list[dict], language: str) -> tuple[dict, str]:
    """The largest lesion any slice reports and the effusion sides over all slices, as a dict and a sentence."""
    lesions = [s for s in slices if s["findings"]["lesion"]]
    best = max(lesions, key=lambda s: s["findings"]["size_mm"] or 0.0) if lesions else None
    sides = {s["findings"]["effusion"] for s in slices if s["findings"]["effusion"]}
    effusion = "bilateral" if "bilateral" in sides or sides >= {"right", "left"} else (sides.pop() if sides else None)
    lesion = None
    if best is not None:
        lesion = {k: best["findings"][k] for k in ("side", "lobe", "size_mm", "type")}
        lesion["z_mm"] = best["z_mm"]
    said = best["answers"] if best else {}
    if language == "zh":
        first = f"{said['lobe']}见{said['type']}病灶，大小约{said['size']}" if best else "未见明确病灶"
        second = f"{EFFUSION_ZH[effusion]}胸腔积液" if effusion else "未见胸腔积液"
        text = f"{first}；{second}。"
    else:
        first = f"A {said['size']} {said['type']} lesion in the {said['lobe']}" if best else "No lesion seen"
        second = f"{effusion} pleural effusion" if effusion else "no pleural effusion"
        text = f"{first}; {second}."
    return {"lesion": lesion, "effusion": effusion}, text


def describe_volume(reader: SliceReader, volume: Volume, *, labels: Volume | None = None, n_slices: int = 8,
                    language: str = "en") -> Description:
    from medgen.pipelines.validation import check_label_map, check_positive_int

    if language not in QUESTIONS:
        raise ValueError(f"`language` must be 'en' or 'zh', got {language!r}")
    check_positive_int(n_slices, "n_slices", maximum=MAX_SLICES)
    if labels is not None:
        labels = labels.with_array(check_label_map(labels.array, labels.meta.get("path", "labels")))
    indices = label_slices(labels, n_slices) if labels is not None else lung_slices(volume, n_slices)
    hu = np.asarray(volume.array, np.float32)
    planes = [_display(hu[:, :, i]) for i in indices]
    replies = reader.read(planes, [QUESTIONS[language][k] for k in KEYS])
    slices = []
    for index, reply in zip(indices, replies, strict=True):
        said = dict(zip(KEYS, reply, strict=True))
        z = float((volume.affine @ np.array([0, 0, index, 1.0]))[2])
        slices.append({"index": int(index), "z_mm": round(z, 2), "answers": said,
                       "findings": findings_from_answers(said, language)})
    summary, text = summarize(slices, language)
    return Description(slices, summary, text)


def default_labels_path(volume_path) -> Path | None:
    path = Path(volume_path)
    name = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    candidate = path.with_name(f"{name}_labels.nii.gz")
    return candidate if candidate.is_file() else None
