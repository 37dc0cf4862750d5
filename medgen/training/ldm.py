"""Stage 2: train the report-conditioned latent diffusion UNet on cached VAE latents.

Per step: latents z (already x scale_factor) -> noise, timesteps (``scheduler.train``) -> x_t ->
``ConditionalUNet(x_t, t, text tokens, pooled text, density)`` -> MSE against `training_target`
(epsilon / v / flow velocity, whatever the scheduler predicts).

Conditions are dropped independently for classifier-free guidance: the text with probability
``drop_text`` (replaced by the encoder's empty-string encoding, the null text used at sampling) and the
density with probability ``drop_density`` (set to NaN, the UNet's learned null).

``train_ldm.stages`` runs in order: e.g. stage 1 with a frozen text encoder, stage 2 with its top
``trainable_text_layers`` transformer layers trainable at their own ``text_lr`` (own warm-up from the
stage start).  AdamW, cosine LR with linear warm-up, EMA of every trained weight (the EMA weights are
what the final pipeline holds), optional gradient clipping, bf16 autocast on CUDA.

Output: ``<output_dir>/pipeline/`` written by `ReportToVolumePipeline.save_pretrained`.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medgen.config import public_config, resolve_path
from medgen.engine.checkpoint import CheckpointManager, get_rng_state, load_checkpoint, set_rng_state
from medgen.engine.common import (
    BatchStream,
    RunLogger,
    autocast,
    finite_step,
    init_from_pretrained,
    run_and_close,
    seed_everything,
    start_run,
)
from medgen.engine.distributed import DistContext
from medgen.engine.optim import make_optimizer, set_learning_rates
from medgen.engine.state import EMA, GradClipper
from medgen.training.latents import LatentDataset, cache_latents, collate_latents, read_index

__all__ = ["ConditionedDenoiser", "LDMTrainer", "apply_condition_dropout", "sample_dropout_masks", "train_ldm"]


def sample_dropout_masks(batch: int, p_text: float, p_density: float, generator: torch.Generator | None = None):
    """Independent Bernoulli masks (B,) bool: (drop the text, drop the density)."""
    u = torch.rand(2, batch, generator=generator)
    return u[0] < p_text, u[1] < p_density


def apply_condition_dropout(encoding, empty, density: torch.Tensor, drop_text: torch.Tensor, drop_density: torch.Tensor):
    """Rows with `drop_text` get the `empty` encoding; rows with `drop_density` get density NaN.

    Args:
        encoding, empty: `TextEncoding` of batch B (token lengths may differ: both are padded to the longer).
        density: (B,) float; drop_text, drop_density: (B,) bool.
    Returns:
        (TextEncoding, density (B,)).
    """
    from medgen.text.encoder import TextEncoding

    length = max(encoding.token_states.shape[1], empty.token_states.shape[1])
    enc, null = encoding.pad_to(length), empty.pad_to(length)
    m = drop_text.to(enc.token_states.device)
    dropped = TextEncoding(
        torch.where(m[:, None, None], null.token_states.to(enc.token_states.dtype), enc.token_states),
        torch.where(m[:, None], null.attention_mask, enc.attention_mask),
        torch.where(m[:, None], null.pooled.to(enc.pooled.dtype), enc.pooled),
    )
    density = density.to(enc.token_states.device, torch.float32)
    density = torch.where(drop_density.to(density.device), torch.full_like(density, math.nan), density)
    return dropped, density


class ConditionedDenoiser(torch.nn.Module):
    """Text encoder + UNet as one module (what DDP wraps, so trainable text layers are synchronised too)."""

    def __init__(self, unet, text_encoder):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder

    def forward(self, noisy, timesteps, reports: list[str], density, drop_text, drop_density, layout=None):
        encoding = self.text_encoder(reports)
        empty = self.text_encoder.empty_encoding(len(reports))
        encoding, density = apply_condition_dropout(encoding, empty, density, drop_text, drop_density)
        dtype = noisy.dtype
        return self.unet(noisy, timesteps, token_states=encoding.token_states.to(dtype),
                         attention_mask=encoding.attention_mask, pooled=encoding.pooled.to(dtype), density=density,
                         layout=layout)


def _load_text_encoder(config: dict):
    from medgen.text.loading import load_text_encoder

    text_cfg = dict(config["text_encoder"])
    name = str(text_cfg.get("name_or_path", ""))
    if name:
        local = resolve_path(name, config)
        if local.exists():  # a local folder; otherwise a Hugging Face id looked up in the cache
            text_cfg["name_or_path"] = str(local)
    text_cfg.pop("trainable_layers", None)  # the stages decide
    return load_text_encoder(text_cfg)


class LDMTrainer:
    """One LDM training run over all `train_ldm.stages`; `run()` returns the pipeline folder."""

    def __init__(self, config: dict, *, resume: bool = False, device=None, progress: bool = True,
                 ctx: DistContext | None = None):
        from medgen.diffusion import build_scheduler
        from medgen.models import ConditionalUNet

        start_run(self, config, "train_ldm", device=device, progress=progress, ctx=ctx)
        resolve_path(config["data"]["manifest"], config, must_exist=True)  # fail before any work
        if not (self.out / "autoencoder" / "config.json").is_file():
            raise FileNotFoundError(f"{self.out / 'autoencoder'}: no trained autoencoder; run `medgen train vae` first")

        self.text = _load_text_encoder(config).to(self.device)
        self.text.set_trainable_layers(0)
        hidden = self.text.hidden_size
        self.unet = ConditionalUNet(**config["unet"], cross_attention_dim=hidden, pooled_dim=hidden).to(self.device)
        if self.tc.get("init_from") and not resume:  # fine-tune a trained UNet (a resume restores its own)
            init_from_pretrained(self.unet, self.tc["init_from"], prefix="unet.", config=config)
        self.denoiser = ConditionedDenoiser(self.unet, self.text)
        self.scheduler = build_scheduler(config["scheduler"]["train"])
        self.latent_path = cache_latents(config, ctx=self.ctx, progress=self.progress)
        self.dataset = LatentDataset(self.latent_path, "train")
        if (self.dataset.layouts is not None) != bool(self.unet.layout_channels):
            raise ValueError("unet.layout_channels must be set exactly when the autoencoder is layout-aware "
                             f"(autoencoder.label_nc); got layout_channels={self.unet.layout_channels}")
        self.stream = BatchStream(self.dataset, self.tc["batch_size"], self.ctx, seed=self.seed, collate_fn=collate_latents)
        self.optimizer = make_optimizer(self.unet.parameters(), self.tc["lr"], weight_decay=float(self.tc.get("weight_decay", 0.0)))
        self.ema = EMA(float(self.tc.get("ema_decay", 0.999)))
        self.ema.register(self.unet.named_parameters(), "unet.")
        self.clipper = GradClipper(self.tc.get("grad_clip"))
        self.generator = torch.Generator().manual_seed(self.seed + 1000 * self.ctx.rank)
        seed_everything(self.seed + 1000 * self.ctx.rank)
        self.stage_ends = list(itertools.accumulate(int(s["steps"]) for s in self.tc["stages"]))
        self.total = self.stage_ends[-1]
        self.checkpoints = CheckpointManager(self.out / "checkpoints" / "ldm", keep_last=int(self.tc.get("keep_last", 3)),
                                             enabled=self.ctx.is_main)
        self.step = self.start_step = 0
        self.stage = -1
        self.text_trained: list[str] = []  # text-encoder parameters made trainable by some stage so far
        self.model = self.denoiser
        if not (resume and self._resume()):
            self.enter_stage(0)

    # ------------------------------------------------------------------------------------- stages
    def stage_index(self, step: int) -> int:
        return next((i for i, end in enumerate(self.stage_ends) if step < end), len(self.stage_ends) - 1)

    def enter_stage(self, index: int) -> None:
        """Unfreeze the stage's top text layers; new ones join the optimizer (own group, own warm-up) and the EMA."""
        stage = self.tc["stages"][index]
        self.text.set_trainable_layers(int(stage.get("trainable_text_layers", 0)))
        new = [(n, p) for n, p in self.text.named_parameters() if p.requires_grad and n not in self.text_trained]
        if new:
            lr = float(stage["text_lr"])
            self.optimizer.add_param_group({"params": [p for _, p in new], "lr": lr, "base_lr": lr, "warmup_start": self.step})
            self.ema.register(new, "text_encoder.")
            self.text_trained += [n for n, _ in new]
        elif stage.get("text_lr") is not None:
            for group in self.optimizer.param_groups[1:]:
                group["base_lr"] = float(stage["text_lr"])
        self.stage = index
        self.model = self.ctx.wrap(self.denoiser)  # DDP must see the current set of trainable parameters

    # -------------------------------------------------------------------------------- checkpoints
    def weights(self) -> dict:
        weights = {"unet": self.unet.state_dict()}
        if self.text_trained:
            params = dict(self.text.named_parameters())
            weights["text_encoder"] = {n: params[n] for n in self.text_trained}
        return weights

    def save(self) -> Path | None:
        state = {"step": self.step, "stage": self.stage, "optimizer": self.optimizer.state_dict(),
                 "ema": self.ema.state_dict(), "clip": self.clipper.state_dict(), "data": self.stream.state_dict(),
                 "rng": get_rng_state({"noise": self.generator})}
        return self.checkpoints.save(self.step, weights=self.weights(), state=state,
                                     meta={"stage": "ldm", "config": public_config(self.config)})

    def _resume(self) -> bool:
        path = self.ctx.broadcast_object(str(self.checkpoints.latest() or ""))
        if not path:
            return False
        ckpt = load_checkpoint(path)
        self.unet.load_state_dict(ckpt.weights["unet"])
        if "text_encoder" in ckpt.weights:
            result = self.text.load_state_dict(ckpt.weights["text_encoder"], strict=False)
            if result.unexpected_keys:
                raise ValueError(f"{path}: text-encoder weights do not match this encoder: {result.unexpected_keys[:3]}")
        state = ckpt.state
        self.step = self.start_step = int(state["step"])
        for index in range(int(state["stage"]) + 1):  # rebuild the optimizer groups / EMA entries in order
            self.enter_stage(index)
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.clipper.load_state_dict(state["clip"])
        self.stream.load_state_dict(state["data"])
        set_rng_state(state["rng"], {"noise": self.generator})
        return True

    # ----------------------------------------------------------------------------------- training
    def train_step(self, batch: dict) -> dict[str, float]:
        from medgen.diffusion import add_noise, sample_timesteps, training_target

        index = self.stage_index(self.step)
        if index != self.stage:
            self.enter_stage(index)
        set_learning_rates(self.optimizer, self.step, int(self.tc["warmup"]), self.total)
        latents = batch["latent"].to(self.device, non_blocking=True)
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=self.generator).to(self.device)
        t = sample_timesteps(self.scheduler, b, self.generator, self.device, latent_shape=tuple(latents.shape))
        noisy = add_noise(self.scheduler, latents, noise, t)
        target = training_target(self.scheduler, latents, noise, t)
        drop_text, drop_density = sample_dropout_masks(b, float(self.tc.get("drop_text", 0.0)),
                                                       float(self.tc.get("drop_density", 0.0)), self.generator)
        self.denoiser.train()
        layout = batch.get("layout")
        if layout is not None:
            layout = layout.to(self.device, non_blocking=True)
        with autocast(self.device, bool(self.tc.get("bf16", False))):
            pred = self.model(noisy, t, batch["report"], batch["density"], drop_text, drop_density, layout)
        loss = F.mse_loss(pred.float(), target.float())
        loss.backward()
        norm = self.clipper(p for p in self.denoiser.parameters() if p.requires_grad)
        if finite_step(self.optimizer, norm, self.clipper):
            self.ema.update()
        self.step += 1
        logs = {"ldm/loss": loss.item(), "ldm/grad_norm": norm, "ldm/lr": self.optimizer.param_groups[0]["lr"],
                "ldm/stage": self.stage}
        if len(self.optimizer.param_groups) > 1:
            logs["ldm/text_lr"] = self.optimizer.param_groups[1]["lr"]
        return logs

    def _autoencoder(self):
        from medgen.models.autoencoder import TrainedAutoencoder

        if not hasattr(self, "_ae"):
            self._ae = TrainedAutoencoder.from_pretrained(self.out / "autoencoder", device=self.device).model
        return self._ae

    @torch.no_grad()
    def validate(self) -> None:
        """Sample one volume for the first validation report with the EMA weights; write an orthogonal PNG."""
        from medgen.diffusion import Guidance, build_scheduler, sample_latents
        from medgen.io.png import render_orthogonal
        from medgen.models import latent_downsample_factor
        from medgen.volume import Volume, intensity_to_hu, make_affine

        splits = read_index(self.latent_path)["splits"]
        split = "val" if splits.get("val") else "train"
        row = splits[split][0]
        data, cfg = self.config["data"], self.config
        f = latent_downsample_factor(cfg["autoencoder"])
        latent_shape = (int(self.unet.config["in_channels"]), *(int(s) // f for s in data["shape"]))
        density = None if row.get("density") is None else torch.tensor([float(row["density"])])
        layout = full_layout = None
        if self.unet.layout_channels:
            layout = LatentDataset(self.latent_path, split)[0]["layout"][None].to(self.device)
            full_layout = self._full_layout(row["id"])
        self.denoiser.eval()
        try:
            with self.ema.applied():
                encoding, null = self.text([row["report"]]), self.text.empty_encoding(1)
                latents = sample_latents(
                    self.unet, build_scheduler(cfg["scheduler"]["sample"]), encoding=encoding, null_encoding=null,
                    density=density, latent_shape=latent_shape,
                    num_inference_steps=int(cfg["scheduler"].get("num_inference_steps", 25)),
                    guidance=Guidance(**cfg.get("guidance", {})), generator=torch.Generator().manual_seed(self.seed),
                    progress=False, device=self.device, layout=layout)
        finally:
            self.denoiser.train()
        from medgen.models.autoencoder import decode_latents

        image = decode_latents(self._autoencoder(), latents / self.dataset.scale_factor, full_layout)
        image = image.float().clamp(-1, 1)
        volume = Volume(intensity_to_hu(image[0, 0].cpu().numpy()), make_affine(data["shape"], data["spacing"]))
        render_orthogonal(volume, self.out / "samples" / "ldm" / f"step-{self.step:08d}.png",
                          title=f"LDM step {self.step}: {row['report'][:90]}")

    def _full_layout(self, row_id: str) -> torch.Tensor:
        """Layout channels at image resolution of one manifest row (for decoding validation samples)."""
        from medgen.dataset.transforms import collate_reports
        from medgen.training.vae import _dataset, batch_layout, load_splits

        rows = [r for split in load_splits(self.config).values() for r in split if r["id"] == row_id]
        return batch_layout(collate_reports([_dataset(self.config, rows[:1])[0]]), self.device)

    def export(self) -> Path:
        """Write ``<output_dir>/pipeline`` with the EMA weights (rank 0)."""
        from medgen.diffusion import build_scheduler
        from medgen.pipelines.build import make_pipeline_config
        from medgen.pipelines.text_to_volume import ReportToVolumePipeline

        self.ema.copy_to()
        self.text.set_trainable_layers(0)
        config = make_pipeline_config(self.config, scale_factor=self.dataset.scale_factor)
        pipe = ReportToVolumePipeline(self.text, self._autoencoder(), self.unet,
                                      build_scheduler(self.config["scheduler"]["sample"]), config=config,
                                      anatomy_bank=self._anatomy_bank() if self.unet.layout_channels else None,
                                      reader=self._reader())
        return pipe.save_pretrained(self.out / "pipeline")

    def _reader(self):
        """The report reader named by the config's ``reader`` (a reader folder), or None."""
        if not self.config.get("reader"):
            return None
        from medgen.reader import ReportReader

        return ReportReader.from_pretrained(resolve_path(self.config["reader"], self.config, must_exist=True))

    def _anatomy_bank(self):
        """The anatomy bank of a layout-grounded model: the first ``layout.bank_subjects`` training subjects."""
        from medgen.layout import AnatomyBank
        from medgen.training.vae import load_splits

        settings = self.config.get("layout", {})
        rows = load_splits(self.config)["train"][: int(settings.get("bank_subjects", 200))]
        return AnatomyBank.from_manifest_rows(rows, self.text, k=int(settings.get("k", 8)))

    def run(self) -> Path:
        logger = RunLogger(self.out / "logs" / "ldm", enabled=self.ctx.is_main)
        batches = iter(self.stream)
        bar = tqdm(total=self.total, initial=self.step, desc="LDM", unit="step", disable=not self.progress)
        try:
            while self.step < self.total:
                logs = self.train_step(next(batches))
                bar.update()
                bar.set_postfix(loss=f"{logs['ldm/loss']:.4f}", stage=self.stage + 1)
                logger.log(self.step, logs)
                if self.ctx.is_main and self.step % int(self.tc["validate_every"]) == 0:
                    self.validate()
                if self.step % int(self.tc["checkpoint_every"]) == 0 or self.step == self.total:
                    self.save()
        finally:
            bar.close()
            logger.close()
        out = self.out / "pipeline"
        if self.ctx.is_main:
            self.export()
        self.ctx.barrier()
        return out


def train_ldm(config: dict, *, resume: bool = False, device=None, progress: bool = True) -> Path:
    """Train the conditional latent diffusion model (needs ``<output_dir>/autoencoder`` from `train_vae`).

    Latents are cached first (`cache_latents`, reused when fresh).  Returns ``<output_dir>/pipeline``.

    Args:
        config: from `medgen.config.load_config`.
        resume: continue from the latest checkpoint in ``<output_dir>/checkpoints/ldm`` (if any).
        device: "cpu" / "cuda" (default: CUDA when available); under torchrun each rank uses its own GPU.
        progress: tqdm progress bars (rank 0).
    """
    return run_and_close(LDMTrainer(config, resume=resume, device=device, progress=progress))
