"""`MaisiPipeline`: report text -> medgen's reader -> findings placed in a real anatomy in MAISI's label space
-> NVIDIA MAISI -> `GenerationResult` (the same outputs as the embedded pipeline).

    pipe = MaisiPipeline.from_folders("models/maisi", device="cuda")   # reader: the embedded model's
    result = pipe("A 30 mm solid mass in the right lower lobe. Small left pleural effusion.", seed=0)
    result.save("volumes/mass.nii.gz")     # CT (int16 HU), _labels (MAISI ids), _findings.json, .json, .png

Every input (grid, anatomy file, findings) is checked before MAISI's weights load.
"""

from __future__ import annotations

import time
from pathlib import Path

from medgen.errors import MedgenError
from medgen.findings import Findings
from medgen.io.sidecar import provenance
from medgen.pipelines.layout_stage import findings_for
from medgen.pipelines.result import GenerationResult
from medgen.render.maisi.anatomy import candidate_anatomy, user_anatomy
from medgen.render.maisi.grid import DEFAULT_SHAPE, DEFAULT_SPACING, check_maisi_grid, maisi_affine
from medgen.render.maisi.placement import place_findings
from medgen.render.maisi.renderer import MaisiRenderer
from medgen.volume import Volume, check_density


class MaisiPipeline:
    """medgen's report reader and placement in front of a `MaisiRenderer`.

    Args:
        renderer: the MAISI renderer (its folder is checked; weights load on first use).
        reader: a `medgen.reader.ReportReader` (None: only `findings=` calls work).
    """

    def __init__(self, renderer: MaisiRenderer, reader=None):
        self.renderer = renderer
        self.reader = reader

    @classmethod
    def from_folders(cls, maisi_dir, *, reader_dir=None, device="cpu") -> MaisiPipeline:
        """The MAISI folder and the report reader (default: the embedded model's ``reader/``)."""
        from medgen.pipelines.default_model import resolve_model_path
        from medgen.reader import ReportReader

        renderer = MaisiRenderer(maisi_dir, device=device)
        if reader_dir is None:
            reader_dir = resolve_model_path(None) / "reader"
        if not Path(reader_dir).is_dir():
            raise MedgenError(f"no report reader at {reader_dir}; pass reader_dir= a folder written by "
                              "ReportReader.save_pretrained (or give findings instead of a report)")
        from medgen.io.weights import quiet_transformers

        with quiet_transformers():
            return cls(renderer, ReportReader.from_pretrained(reader_dir))

    def check_inputs(self, report=None, *, findings=None, shape=None, spacing=None, density=None, anatomy=None):
        """(shape, spacing) after checking the grid and arguments, before any weights load."""
        shape, spacing = check_maisi_grid(shape or DEFAULT_SHAPE, DEFAULT_SPACING if spacing is None else spacing)
        if report is None and findings is None:
            raise ValueError("give a report or findings")
        if findings is None and self.reader is None:
            raise ValueError("this MAISI pipeline has no report reader: pass `findings`")
        check_density(density)
        if anatomy is not None and not Path(anatomy).is_file():
            from medgen.errors import InputFileError

            raise InputFileError(anatomy, "anatomy segmentation not found")
        return shape, spacing

    def __call__(self, report: str | None = None, *, findings: Findings | None = None, density: float | None = None,
                 seed: int = 0, shape=None, spacing=None, anatomy=None, anatomy_ids: str = "maisi",
                 steps: int | None = None, quality_retries: int = 1, progress: bool = False) -> GenerationResult:
        """One CT from a report (or findings) on a MAISI grid (default 512 x 512 x 256 at 0.75 x 0.75 x 1.25 mm).

        Args:
            anatomy: a segmentation NIfTI (MAISI or, with ``anatomy_ids="totalseg"``, TotalSegmentator v2 ids)
                to render instead of a mask from the download's candidate database.
        """
        shape, spacing = self.check_inputs(report, findings=findings, shape=shape, spacing=spacing, density=density,
                                           anatomy=anatomy)
        start = time.perf_counter()
        reading = self.reader.read(report) if findings is None else None
        chosen = findings_for(reading, findings, density)
        if anatomy is not None:
            base, info = user_anatomy(anatomy, shape, spacing, ids=anatomy_ids)
        else:
            base, info = candidate_anatomy(self.renderer.bundle, shape, spacing, seed)
        affine = maisi_affine(shape, spacing)
        layout = place_findings(base, affine, chosen, seed=seed, info=info)
        hu = self.renderer.render(layout.labels, density=layout.density, seed=seed, steps=steps,
                                  quality_retries=quality_retries, progress=progress)
        record = hu.meta["maisi"]
        warnings = [*layout.warnings, *record.get("warnings", [])]
        layout_dict = {**layout.to_dict(), "warnings": warnings}
        prov = provenance(
            report=report, density=density, seed=int(seed), renderer="maisi", model_id=self.renderer.model_id,
            weights_sha256=record["weights_sha256"], license=record["license"], shape=list(shape),
            spacing=list(spacing), num_inference_steps=record["steps"], device=self.renderer.device,
            findings=layout.findings.to_dict(), layout=layout_dict,
            reader_warnings=list(reading.warnings) if reading is not None else [],
            maisi={k: v for k, v in record.items() if k not in ("weights_sha256", "license")},
            seconds=round(time.perf_counter() - start, 2))
        volume = Volume(hu.array, affine.copy(), prov)
        return GenerationResult(volume=volume, latent=None, provenance=prov, labels=layout.labels,
                                findings=layout.findings)

