"""Report (or findings) -> candidate key slices, fast enough to iterate on wording before generating in 3D.

The report is read (`medgen.reader`), its findings laid out on an anatomy (`medgen.layout`, the same
retrieval, placement and seed as `medgen generate`, on the preview's in-plane grid with the 3D model's field
of view), the layout's key slice chosen (largest lesion cross-section, else most fluid, else mid-lung) and
captioned from what that layout slice holds; the caption and the layout slice condition the 2D model.
So a preview with seed s shows the finding where the 3D volume of the same report and seed puts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medgen.diffusion.guidance import Guidance
from medgen.findings import LABELS, LOBE_LABELS, Findings
from medgen.layout import AnatomyBank, Layout
from medgen.layout.labels import EMPHYSEMA_LABEL, FIRST_LESION_LABEL, lesion_ids
from medgen.slices.captions import caption_en, caption_zh
from medgen.slices.data import SliceConfig, extract_slice, key_slice_index
from medgen.slices.generator.autoencoder import HU_PER_UNIT, vae_decode
from medgen.slices.generator.data import UNKNOWN_DENSITY, layout_slice, layout_tensor
from medgen.slices.generator.model import DEFAULT_GUIDANCE, SlicePreviewModel, pool_to_latent
from medgen.slices.generator.sampling import SAMPLERS, sample_preview_latents
from medgen.volume import Volume

DEPTH_MM = 5.0  # through-plane spacing of the preview's layout grid (64 slices, as the 3D default's FOV)


@dataclass
class PreviewResult:
    """Candidate key slices of one report.

    Args:
        hu: (n, S, S) float32 HU, display orientation (rows anterior -> posterior, columns patient right -> left).
        labels: (S, S) uint8 the layout's key slice (`medgen.layout.labels` values).
        caption: what the key slice of the layout shows (the text the 2D model was given).
        slice_findings: the layout slice's findings dict (`medgen.slices.data.SliceSample.findings`).
        layout: the 3D layout the slice was cut from; seeds: the seed of each candidate.
    """

    hu: np.ndarray
    labels: np.ndarray
    caption: str
    slice_findings: dict
    layout: Layout
    seeds: list[int]
    warnings: list[str] = field(default_factory=list)

    @property
    def spacing_mm(self) -> float:
        return float(self.slice_findings["spacing_mm"])


def is_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text or "")


def layout_slice_findings(layout: Layout, index: int) -> dict:
    """What axial slice `index` of a layout shows, measured as on a CT slice (`extract_slice`): the layout's
    label map stands in for the CT (lesions, fluid), emphysematous lung at -1000 HU and other lung at -850 so
    the LAA-950 rule reads the emphysema label."""
    labels = np.asarray(layout.labels.array)
    phantom_labels = labels.copy()
    phantom_labels[labels >= FIRST_LESION_LABEL] = LABELS["lesion"]
    phantom_labels[labels == EMPHYSEMA_LABEL] = next(iter(LOBE_LABELS.values()))
    hu = np.where(labels == EMPHYSEMA_LABEL, -1000.0, -850.0).astype(np.float32)
    affine = layout.labels.affine
    sample = extract_slice(Volume(hu, affine), Volume(phantom_labels, affine), layout.findings,
                           lesion_ids(labels), view="axial", index=int(index),
                           config=SliceConfig(shape=labels.shape, spacing=layout.labels.spacing, size=8))
    return {**sample.findings, "spacing_mm": float(layout.labels.spacing[0])}


class SlicePreviewPipeline:
    """`pipe(report=..., n=4, seed=0)` -> `PreviewResult`.

    Args:
        model: the `SlicePreviewModel`; reader: a `ReportReader` (None: findings must be given);
        bank: an `AnatomyBank` (None: the anatomy is drawn from the seed); fov_mm: field of view.
    """

    def __init__(self, model: SlicePreviewModel, reader=None, bank: AnatomyBank | None = None,
                 fov_mm: float = 320.0):
        self.model, self.reader, self.bank, self.fov_mm = model, reader, bank, float(fov_mm)

    @classmethod
    def from_pretrained(cls, path=None) -> SlicePreviewPipeline:
        """Load a preview folder (default: the embedded `medgen/assets/default-model/preview`)."""
        from medgen.errors import ModelNotFoundError
        from medgen.pipelines.default_model import default_model_path
        from medgen.reader import ReportReader

        folder = Path(path) if path is not None else default_model_path() / "preview"
        if path is None and not (folder / "preview.json").is_file():
            raise ModelNotFoundError(f"the embedded preview model is not installed (looked in {folder}); pass "
                                     "--model DIR with a folder written by `medgen train slices preview`")
        model = SlicePreviewModel.from_pretrained(folder)
        reader = ReportReader.from_pretrained(model.sources["reader"])
        bank = model.sources.get("anatomy_bank")
        bank = AnatomyBank.from_pretrained(bank) if bank else None
        return cls(model, reader, bank, fov_mm=float(model.config.get("fov_mm", 320.0)))

    def layout(self, findings: Findings, report: str, seed: int) -> Layout:
        from medgen.pipelines.layout_stage import plan_layout

        size = int(self.model.config["size"])
        pooled = self.model.text_encoder.first([report or ""]).pooled[0].float().cpu().numpy()
        pixel = self.fov_mm / size
        return plan_layout(findings, shape=(size, size, int(round(self.fov_mm / DEPTH_MM))),
                           spacing=(pixel, pixel, DEPTH_MM), seed=int(seed), pooled_embedding=pooled, bank=self.bank)

    @torch.no_grad()
    def __call__(self, report: str | None = None, *, findings: Findings | None = None, n: int = 4, seed: int = 0,
                 steps: int = 12, sampler: str = "dpmpp-2m-karras", guidance: Guidance | None = None,
                 density: float | None = None, use_refiner: bool = True, language: str | None = None
                 ) -> PreviewResult:
        """Candidate key slices of `report` (or of `findings`), `n` noise draws on one layout (seed `seed`)."""
        from medgen.pipelines import validation as check
        from medgen.pipelines.layout_stage import findings_for
        from medgen.volume import check_density

        if report is None and findings is None:
            raise ValueError("give a report or findings")
        if report is not None:
            check.check_report(report)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"`n` must be a positive number of candidates, got {n!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {sampler!r}")
        density = check_density(density)
        seed = check.check_seed(seed)
        steps = check.check_steps(steps, "steps")
        if guidance is not None:
            guidance = Guidance(text=check.check_guidance(guidance.text, "guidance.text"),
                                density=check.check_guidance(guidance.density, "guidance.density"))
        warnings = []
        reading = None
        if findings is None:
            if self.reader is None:
                raise ValueError("this preview pipeline has no reader: pass findings")
            reading = self.reader.read(report)
            warnings += reading.warnings
        chosen = findings_for(reading, findings, density)
        layout = self.layout(chosen, report or "", seed)
        warnings += layout.warnings
        labels3d, density3d = np.asarray(layout.labels.array), np.asarray(layout.density.array)
        index = key_slice_index(labels3d, lesion_ids(labels3d))
        slice_findings = layout_slice_findings(layout, index)
        language = language or ("zh" if is_chinese(report or "") else "en")
        caption = (caption_zh if language == "zh" else caption_en)(slice_findings)
        labels2d, density2d = layout_slice(labels3d, density3d, index)

        size = int(self.model.config["size"])
        lesions = slice_findings["lesions"]
        key_density = float(lesions[0]["density"]) if lesions else None
        micro = np.tile(np.array([slice_findings["position_mm"], self.fov_mm, self.fov_mm / size, 0.0, 0.0,
                                  key_density if key_density is not None else UNKNOWN_DENSITY], np.float32), (n, 1))
        layout_small = pool_to_latent(layout_tensor(labels2d[None], density2d[None]), self.model.factor).repeat(n, 1, 1, 1)
        encoding = self.model.text_encoder([caption] * n)
        null = self.model.text_encoder.empty_encoding(1)
        generator = torch.Generator().manual_seed(int(seed))
        latents = sample_preview_latents(self.model, layout_small, encoding, null,
                                         None if key_density is None else torch.full((n,), key_density), micro,
                                         steps=steps, sampler=sampler, guidance=guidance or DEFAULT_GUIDANCE,
                                         use_refiner=use_refiner, generator=generator)
        image = vae_decode(self.model.vae, latents, self.model.scale)[:, 0].numpy()
        hu = (image * HU_PER_UNIT).astype(np.float32)  # HU window centred on 0 (see medgen.volume.HU_WINDOW)
        return PreviewResult(hu, labels2d, caption, slice_findings, layout, [int(seed)] * n, warnings)
