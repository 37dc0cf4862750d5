"""`ReportToVolumePipeline`: report text (+ optional density) -> synthetic CT `Volume` in HU (inference only).

    pipe = ReportToVolumePipeline.from_pretrained("runs/phantom-64/pipeline")
    result = pipe("A 12 mm solid nodule in the right upper lobe.", density=0.9, seed=7)
    result.save("volumes/nodule.nii.gz")

Seeds: the initial noise comes from a CPU ``torch.Generator`` seeded with `seed` (default 0), so the same
seed on the same device gives a bit-identical volume, and nearly the same one on another device. A
batch (list of reports) draws its noise from one generator: item i of a batch matches the same batch
again, not a single call. The seed is always recorded in the provenance.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medgen.diffusion import Guidance, sample_latents
from medgen.errors import MedgenError
from medgen.io import weights as storage
from medgen.io.sidecar import provenance
from medgen.models import decode_tiled, latent_downsample_factor
from medgen.models.autoencoder import decode_latents
from medgen.pipelines import layout_stage, persistence
from medgen.pipelines import validation as check
from medgen.pipelines.result import GenerationResult
from medgen.refine import GridPlan, TrilinearStage, plan_grid
from medgen.refine.cascade import refine_batch, upsample_label_volume
from medgen.render.lung_field import remove_unasked_structure
from medgen.volume import Volume, intensity_to_hu, make_affine

DEFAULT_SEED = 0
# Keys of the pipeline config besides "autoencoder" (required) and "scheduler" (from the scheduler).
CONFIG_DEFAULTS = {
    "name": "medgen",
    "scale_factor": 1.0,  # latents were multiplied by this for training; decoding divides by it
    "shape": [64, 64, 64],  # default (X, Y, Z) voxels
    "spacing": [5.0, 5.0, 5.0],  # default mm
    "num_inference_steps": 25,
    "guidance": {"text": 3.0, "density": 2.0},
    "decode_tile": 32,  # latent voxels; larger latents are decoded tile by tile
    "decode_overlap": 8,
    "phantom_version": 1,  # the phantom its training subjects came from (evaluation compares with the same)
}


@dataclass
class GenerationRequest:
    """Checked inputs of one pipeline call (what `check_inputs` returns)."""

    reports: list[str]
    densities: list[float | None] | None
    shape: tuple[int, int, int]  # the native grid the model renders at
    spacing: tuple[float, float, float]
    num_inference_steps: int
    guidance: Guidance
    seed: int
    seed_source: str  # "seed" or "generator"
    findings: object = None  # Findings given instead of read (single report)
    layout: Volume | None = None  # the user's label map (single report)
    grid: GridPlan | None = None  # native grid -> output grid (the resolution cascade)


class ReportToVolumePipeline:
    """Text encoder + KL autoencoder + conditional UNet + scheduler, run as a numbered recipe.

    Args:
        text_encoder: `TextEncoder` (or `DualTextEncoder`): list[str] -> TextEncoding.
        autoencoder: MONAI ``AutoencoderKL`` built by `build_autoencoder(config["autoencoder"])`.
        unet: `ConditionalUNet` whose cross_attention_dim / pooled_dim match the text encoder.
        scheduler: from `build_scheduler` (its config is kept as ``config["scheduler"]``).
        config: "autoencoder" (AutoencoderKL kwargs, required) and optionally the keys of
            `CONFIG_DEFAULTS` (name, scale_factor, default shape/spacing/steps/guidance, decode tiling).

    The networks are switched to eval mode: build the pipeline after training, not during it.
    """

    def __init__(self, text_encoder, autoencoder, unet, scheduler, *, config: dict, reader=None, anatomy_bank=None,
                 refiner=None):
        if "autoencoder" not in config:
            raise ValueError("`config` must hold the autoencoder's constructor kwargs under 'autoencoder'")
        self.text_encoder = text_encoder
        self.autoencoder = autoencoder
        self.unet = unet
        self.scheduler = scheduler
        self.reader = reader  # optional ReportReader: report -> Findings, recorded with every volume
        self.anatomy_bank = anatomy_bank  # optional AnatomyBank (layout models): anatomy by report embedding
        self.refiner = list(refiner or [])  # learned x2 stages (`medgen.refine.LearnedStage`), stage 1 first
        self.config = copy.deepcopy({**CONFIG_DEFAULTS, **config})
        if "scheduler" not in self.config:
            if not hasattr(scheduler, "medgen_config"):
                raise ValueError("build the scheduler with `build_scheduler` or give its config as config['scheduler']")
            self.config["scheduler"] = dict(scheduler.medgen_config)
        self.latent_factor = latent_downsample_factor(self.config["autoencoder"])
        self.model_path: Path | None = None
        self.model_version: str | None = None  # the medgen version that saved the folder it was loaded from
        self.weights_sha256: dict[str, str] = {}  # filled when loaded from / saved to a folder
        self._check_components()
        for module in (text_encoder, autoencoder, unet, reader):
            if module is not None:
                module.eval()

    def _check_components(self) -> None:
        hidden = self.text_encoder.hidden_size
        if (self.unet.cross_attention_dim, self.unet.pooled_dim) != (hidden, hidden):
            raise MedgenError(
                f"the UNet expects text features of size {self.unet.cross_attention_dim}/{self.unet.pooled_dim} "
                f"but the text encoder gives {hidden}: the components come from different models"
            )
        latent_channels = int(self.config["autoencoder"]["latent_channels"])
        if self.unet.config["in_channels"] != latent_channels:
            raise MedgenError(
                f"the UNet takes {self.unet.config['in_channels']} latent channels but the autoencoder "
                f"makes {latent_channels}: the components come from different models"
            )
        check.check_shape(self.config["shape"], self.latent_factor)
        check.check_spacing(self.config["spacing"])

    # ------------------------------------------------------------------------------------ devices
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device) -> ReportToVolumePipeline:
        """Move every network to `device` ('cpu', 'cuda', 'cuda:N'); returns self."""
        device = check.check_device(device)
        for module in (self.text_encoder, self.autoencoder, self.unet, self.reader):
            if module is not None:
                module.to(device)
        return self

    # -------------------------------------------------------------------------------- persistence
    def save_pretrained(self, path, *, dtype: torch.dtype | None = None, overwrite: bool = True) -> Path:
        """Write one subfolder per component + ``model_index.json`` (atomically: temp folder, then rename).

        Args:
            path: the pipeline folder.
            dtype: store floating weights as this type (e.g. ``torch.float16`` halves the size);
                they are loaded back as float32.
            overwrite: replace an existing folder.
        """
        return persistence.save_pipeline(self, path, dtype=dtype, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, path, *, device="cpu") -> ReportToVolumePipeline:
        """Load a folder written by `save_pretrained` (safetensors only; checksums verified), float32.

        Raises:
            ModelNotFoundError: the folder, its model_index.json or a component folder is missing.
            InputFileError: a corrupt JSON, pickle or invalid weights, a checksum mismatch (names the file).
        """
        return persistence.load_pipeline(cls, path, device=device)

    # ---------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def __call__(
        self,
        report=None,
        *,
        findings=None,
        layout=None,
        density=None,
        shape=None,
        spacing=None,
        fov=None,
        num_inference_steps=None,
        guidance_scale=None,
        density_guidance_scale=None,
        seed=None,
        generator=None,
        progress: bool = True,
    ):
        """Generate CT volume(s) from report text.

        Args:
            report: a report (str) or a list of reports (one batch); may be None with `findings`.
            findings: `Findings` (or its dict) to generate instead of what the reader reads (layout-grounded
                models; one report). Without a report, the text condition is a report written from them.
            layout: the user's label map (a `Volume` or NIfTI path on the output grid, values of
                `medgen.layout.label_table`) to render instead of a generated layout (mask-to-CT).
            density: lesion density in [0, 1], None (implied by the report), or one value/None per report.
            shape: output (X, Y, Z) voxels over the model's field of view: its native grid (``config["shape"]``,
                the default) times 2, 4 or 8 runs the resolution cascade; spacing = FOV / shape.
            spacing: output mm, one value or (sx, sy, sz); the alternative to `shape` (shape = FOV / spacing).
            fov: field of view in mm; must be the model's (``config["shape"] * config["spacing"]``).
            num_inference_steps: sampler steps (default: ``config["num_inference_steps"]``).
            guidance_scale: text guidance weight w_t (1 = conditional only; default from the config).
            density_guidance_scale: density guidance weight w_d (1 = off; used only with a density).
            seed: seed of the CPU noise generator (default 0); or pass `generator` instead.
            generator: a seeded ``torch.Generator`` (its ``initial_seed()`` is recorded).
            progress: show a progress bar over the sampler steps.

        Returns:
            `GenerationResult` for one report; a list of them (same order) for a list of reports.
        """
        started = time.perf_counter()
        # 1. Check inputs
        request = self.check_inputs(
            report, density=density, shape=shape, spacing=spacing, fov=fov, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, density_guidance_scale=density_guidance_scale, seed=seed,
            generator=generator, findings=findings, layout=layout,
        )
        # 2. Read and encode report
        readings = self.read_reports(request.reports) if request.findings is None else []
        encoding, null_encoding = self.encode_report(request.reports)
        # 3. Lay out the findings (layout-grounded models)
        layouts = self.lay_out(request, readings, encoding)
        full_layout, pooled_layout = layout_stage.layout_tensors(layouts, self.latent_factor, self.device)
        # 4. Prepare latents
        latent_shape, generator = self.prepare_latents(request, generator)
        # 5. Denoise
        latents = self.denoise(request, encoding, null_encoding, latent_shape, generator, progress, layouts,
                               pooled_layout)
        # 6. Decode; the normal lung field keeps only what the layout holds
        hu = self.decode(latents, full_layout)
        hu = self.constrain_lung_field(hu, layouts, request.spacing)
        # 7. Refine to the output grid (x2 per stage, slab by slab)
        hu, stage_names = refine_batch(hu, request.grid.stages, request.spacing, stages=self.cascade_stages(
            request.grid.stages), progress=progress)
        # 8. Wrap
        results = self.wrap(request, hu, latents, elapsed_s=time.perf_counter() - started, readings=readings,
                            layouts=layouts, stage_names=stage_names)
        return results if isinstance(report, (list, tuple)) else results[0]

    def constrain_lung_field(self, hu: np.ndarray, layouts: list, spacing) -> np.ndarray:
        """Take lesion-sized structure out of the normal lung field of each layout (`medgen.render.lung_field`)
        with the settings of ``config["lung_field"]`` (keyword arguments of `remove_unasked_structure`; the older
        ``config["lung_field_radius_mm"]`` still works); a model without them renders unconstrained."""
        settings = self.config.get("lung_field")
        if settings is None and self.config.get("lung_field_radius_mm") is not None:
            settings = {"radius_mm": float(self.config["lung_field_radius_mm"])}
        if not layouts or not settings:
            return hu
        return np.stack([remove_unasked_structure(h, np.asarray(layout.labels.array), spacing, **settings)
                         for h, layout in zip(hu, layouts, strict=True)])

    def cascade_stages(self, n: int) -> list:
        """The `n` x2 stages to run: the learned refiner's where it has them, trilinear beyond."""
        return [self.refiner[k] if k < len(self.refiner) else TrilinearStage() for k in range(n)]

    @property
    def layout_grounded(self) -> bool:
        """True when the model renders from a layout (its UNet joins layout channels)."""
        return bool(getattr(self.unet, "layout_channels", 0))

    def check_inputs(self, report, *, density=None, shape=None, spacing=None, fov=None, num_inference_steps=None,
                     guidance_scale=None, density_guidance_scale=None, seed=None,
                     generator=None, findings=None, layout=None) -> GenerationRequest:
        """Validate every argument of `__call__` (defaults filled in from the config)."""
        findings, layout = layout_stage.check_layout_inputs(self, report, findings, layout)
        if report is None and findings is not None:
            report = layout_stage.report_from_findings(findings)
        reports = check.check_reports(report)
        guidance = self.config["guidance"]
        if seed is not None and generator is not None:
            raise ValueError("pass either `seed` or `generator`, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"`generator` must be a torch.Generator, got {type(generator).__name__}")
        grid = plan_grid(self.config["shape"], self.config["spacing"], shape=shape, spacing=spacing, fov=fov)
        if layout is not None and grid.stages:
            raise ValueError(f"a label map given as `layout` is rendered on the model's native grid "
                             f"{'x'.join(map(str, grid.native_shape))}: generate at that shape, not {grid.shape}")
        request = GenerationRequest(
            reports=reports,
            densities=check.check_densities(density, len(reports)),
            shape=check.check_shape(grid.native_shape, self.latent_factor),
            spacing=grid.native_spacing,
            num_inference_steps=check.check_positive_int(
                self.config["num_inference_steps"] if num_inference_steps is None else num_inference_steps,
                "num_inference_steps", maximum=int(self.scheduler.num_train_timesteps),
            ),
            guidance=Guidance(
                text=check.check_guidance(guidance["text"] if guidance_scale is None else guidance_scale,
                                          "guidance_scale"),
                density=check.check_guidance(
                    guidance["density"] if density_guidance_scale is None else density_guidance_scale,
                    "density_guidance_scale",
                ),
            ),
            seed=generator.initial_seed() if generator is not None else check.check_seed(
                DEFAULT_SEED if seed is None else seed),
            seed_source="generator" if generator is not None else "seed",
            findings=findings,
            layout=layout,
            grid=grid,
        )
        layout_stage.check_layout_shape(self, request.shape)
        return request

    def read_reports(self, reports: list[str]) -> list:
        """The reader's `ReadResult` per report (warnings raised as `ReaderWarning`s too); [] without a reader."""
        return layout_stage.read_reports(self.reader, reports)

    def encode_report(self, reports: list[str]):
        """Reports -> (encoding of batch B, empty-text encoding of batch 1) for classifier-free guidance."""
        return self.text_encoder(reports), self.text_encoder.empty_encoding(1)

    def prepare_latents(self, request: GenerationRequest, generator: torch.Generator | None = None):
        """Latent shape (B, C, x, y, z) and the seeded CPU generator its initial noise is drawn from."""
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(request.seed)
        spatial = tuple(s // self.latent_factor for s in request.shape)
        return (len(request.reports), int(self.unet.config["in_channels"]), *spatial), generator

    def lay_out(self, request: GenerationRequest, readings: list, encoding) -> list:
        """One `Layout` per report for a layout-grounded model (warnings raised and recorded); [] otherwise."""
        if not self.layout_grounded:
            return []
        return layout_stage.lay_out(self, request, readings, encoding)

    def denoise(self, request, encoding, null_encoding, latent_shape, generator, progress, layouts=(),
                pooled_layout=None) -> torch.Tensor:
        """Guided reverse diffusion from noise to latents (B, C, x, y, z), joined to `pooled_layout`
        (B, L, x, y, z) for a layout-grounded model."""
        density = layout_stage.unet_density(request, layouts)
        return sample_latents(
            self.unet, self.scheduler, encoding=encoding, null_encoding=null_encoding, density=density,
            latent_shape=latent_shape, num_inference_steps=request.num_inference_steps,
            guidance=request.guidance, generator=generator, progress=progress, device=self.device,
            layout=pooled_layout,
        )

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, full_layout: torch.Tensor | None = None) -> np.ndarray:
        """Latents (B, C, x, y, z) -> HU (B, X, Y, Z) float32; tiled when the latent exceeds `decode_tile`
        (the anatomy-aware decoder of a layout-grounded model reads `full_layout` (B, L, X, Y, Z))."""
        z = latents.to(self.device) / float(self.config["scale_factor"])
        if full_layout is not None:
            image = decode_latents(self.autoencoder, z, full_layout)
            return intensity_to_hu(image[:, 0].float()).cpu().numpy().astype(np.float32)
        tile = self.config.get("decode_tile")
        if tile and any(s > tile for s in z.shape[2:]):
            image = decode_tiled(self.autoencoder, z, tile=int(tile), overlap=int(self.config["decode_overlap"]))
        else:
            image = self.autoencoder.decode(z)
        return intensity_to_hu(image[:, 0].float()).cpu().numpy().astype(np.float32)

    def wrap(self, request: GenerationRequest, hu: np.ndarray, latents: torch.Tensor, *, elapsed_s: float,
             readings=(), layouts=(), stage_names=()):
        """One `GenerationResult` per report on the output grid: Volume (RAS+, centred on the origin) + label
        map + latent + provenance."""
        grid = request.grid
        affine = make_affine(grid.shape, grid.spacing)
        has_density = request.densities is not None
        results = []
        for i, report in enumerate(request.reports):
            record = provenance(
                report=report,
                density=request.densities[i] if has_density else None,
                seed=request.seed,
                seed_source=request.seed_source,
                batch_index=i,
                batch_size=len(request.reports),
                num_inference_steps=request.num_inference_steps,
                guidance_scale=request.guidance.text,
                density_guidance_scale=request.guidance.density if has_density else None,
                scheduler=self.config["scheduler"].get("name"),
                shape=list(grid.shape),
                spacing=list(grid.spacing),
                grid=grid.record(list(stage_names)),
                **self.model_record(),
                weights_sha256=dict(self.weights_sha256),
                device=str(self.device),
                torch_version=torch.__version__,
                elapsed_s=round(elapsed_s, 3),
                **layout_stage.reading_record(readings[i] if readings else None, layouts[i] if layouts else None),
            )
            volume = Volume(hu[i], affine.copy(), record)
            labels = upsample_label_volume(layouts[i].labels, grid.factor, affine) if layouts else None
            findings = layouts[i].findings if layouts else (readings[i].findings if readings else None)
            results.append(GenerationResult(volume=volume, latent=latents[i].detach().cpu(), provenance=record,
                                            labels=labels, findings=findings))
        return results

    def model_record(self) -> dict:
        """How the sidecar names the model: ``model_id`` (``DEFAULT_MODEL_ID`` for the embedded default model,
        else its model_index name), ``model_name``, ``model_version``, ``model_sha256`` (over its weights) and
        ``model_path``: the folder the user loaded it from, never the install path of the embedded model."""
        from medgen.pipelines.default_model import DEFAULT_MODEL_ID, is_default_model

        embedded = self.model_path is not None and is_default_model(self.model_path)
        return {
            "model_id": DEFAULT_MODEL_ID if embedded else self.config["name"],
            "model_name": self.config["name"],
            "model_version": self.model_version,
            "model_sha256": storage.combined_checksum(self.weights_sha256) if self.weights_sha256 else None,
            "model_path": None if embedded or self.model_path is None else str(self.model_path),
        }

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.config["shape"])
        return (f"{type(self).__name__}(name={self.config['name']!r}, shape={shape}, "
                f"latent_factor={self.latent_factor}, device={self.device})")

