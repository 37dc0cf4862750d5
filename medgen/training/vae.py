"""Stage 1: train the 3D KL autoencoder (MONAI ``AutoencoderKL``) on the manifest's training volumes.

Loss (per step)::

    generator      L1(x, x_hat) + kl_weight * KL(q(z|x) || N(0, I)) [+ adv_weight * LSGAN(D(x_hat) -> real)]
    discriminator  0.5 * (LSGAN(D(x_hat) -> fake) + LSGAN(D(x) -> real))          (from step `adv_start`)

With ``train_vae.finding_weight`` w > 0 the L1 term is weighted 1 + w inside lesions and pleural fluid
(from the layout), so the few voxels that carry the findings are not drowned by the background.
With ``autoencoder.label_nc`` the autoencoder is layout-aware (SPADE decoder, `medgen.models.autoencoder`):
its batches carry the layout label maps (manifest column ``layout``, `medgen data layouts`).

D is MONAI's ``PatchDiscriminator`` with ``PatchAdversarialLoss(criterion="least_squares")``.  MONAI's
``PerceptualLoss`` is not used: it downloads pretrained weights (no network at run time here).

Output: ``<output_dir>/autoencoder/`` (`TrainedAutoencoder.save_pretrained`: ``config.json`` + ``model.safetensors``,
as in a pipeline folder); the
config holds the constructor kwargs and ``scale_factor`` = 1 / std of the latent means over a sample
of training volumes (latent diffusion works on ``z * scale_factor``, roughly unit variance).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
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
from medgen.engine.state import GradClipper

__all__ = ["train_vae", "VAETrainer", "kl_divergence", "load_splits"]

def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent elements, averaged over the batch (MONAI tutorials)."""
    mu, sigma = z_mu.float(), z_sigma.float()
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1.0)
    return kl.flatten(1).sum(1).mean()


def load_splits(config: dict) -> dict[str, list[dict]]:
    """Manifest rows of ``config["data"]["manifest"]`` by split ("train", "val", "test")."""
    from medgen.dataset.manifest import read_manifest

    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for row in read_manifest(resolve_path(config["data"]["manifest"], config, must_exist=True)):
        splits[row["split"]].append(row)
    return splits


def _dataset(config: dict, rows: list[dict]):
    from medgen.dataset.transforms import DataConfig, build_dataset

    data = dict(config["data"])
    if "label_nc" in config.get("autoencoder", {}):
        data.update(with_label=True, label_key="layout")
    return build_dataset(rows, DataConfig.from_dict(data))


def batch_layout(batch: dict, device: torch.device) -> torch.Tensor | None:
    """Layout channels (B, C, X, Y, Z) of a batch that carries layout label maps, else None."""
    from medgen.layout.labels import batch_channels

    if not isinstance(batch.get("label"), torch.Tensor):  # maps not loaded (a text-only VAE): paths only
        return None
    return batch_channels(batch["label"], batch["findings"]).to(device)


def finding_weights(layout: torch.Tensor | None, weight: float) -> torch.Tensor | float:
    """Per-voxel L1 weight: 1, or 1 + `weight` (the extra weight) inside lesions and pleural fluid."""
    from medgen.layout.labels import finding_mask

    if layout is None or weight <= 0:
        return 1.0
    return 1.0 + weight * finding_mask(layout)


def random_patch(x: torch.Tensor, patch: int, *, seed: int, step: int) -> torch.Tensor:
    """Random cubic crop of side `patch` from (B, C, X, Y, Z), drawn from (seed, step) so resumes repeat it.

    The VAE is convolutional, so training on patches is much cheaper than whole volumes.  Its GroupNorm
    statistics are those of a patch, though, so a whole-volume encode/decode drifts from what was
    learned: finish with some whole-volume steps (`training_crop`).
    """
    sizes = x.shape[2:]
    if patch >= min(sizes):
        return x
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = [int(torch.randint(0, size - patch + 1, (1,), generator=gen)) for size in sizes]
    return x[(..., *[slice(s, s + patch) for s in starts])]


def training_crop(tc: dict, step: int) -> int | None:
    """Patch side for training step `step` (0-based), or None for whole volumes.

    ``train_vae.patch_size`` crops every step except the last ``train_vae.full_volume_steps`` ones.
    """
    patch = tc.get("patch_size")
    if not patch or step >= int(tc["steps"]) - int(tc.get("full_volume_steps") or 0):
        return None
    return int(patch)


def _image(batch: dict, device: torch.device) -> torch.Tensor:
    image = batch["image"]
    image = image.as_tensor() if hasattr(image, "as_tensor") else image
    return image.to(device, non_blocking=True).float()


class VAETrainer:
    """One VAE training run; `run()` trains to ``train_vae.steps`` and returns the autoencoder folder."""

    def __init__(self, config: dict, *, resume: bool = False, device=None, progress: bool = True,
                 ctx: DistContext | None = None):
        from monai.losses import PatchAdversarialLoss

        from medgen.models.autoencoder import build_autoencoder, build_discriminator

        start_run(self, config, "train_vae", device=device, progress=progress, ctx=ctx)

        self.autoencoder = build_autoencoder(config["autoencoder"]).to(self.device)
        self.discriminator = build_discriminator(config["discriminator"]).to(self.device)
        if self.tc.get("init_from") and not resume:  # fine-tune a trained autoencoder (a resume restores its own)
            init_from_pretrained(self.autoencoder, self.tc["init_from"], config=config)
        self.ae = self.ctx.wrap(self.autoencoder)
        self.disc = self.ctx.wrap(self.discriminator)
        seed_everything(self.seed + 1000 * self.ctx.rank)  # same init on every rank, own noise per rank
        self.adv_loss = PatchAdversarialLoss(criterion="least_squares")
        self.opt_g = make_optimizer(self.autoencoder.parameters(), self.tc["lr"])
        self.opt_d = make_optimizer(self.discriminator.parameters(), self.tc["lr"])
        self.clip_g = GradClipper(self.tc.get("grad_clip"))
        self.clip_d = GradClipper(self.tc.get("grad_clip"))
        splits = load_splits(config)
        self.train_rows = splits["train"]
        if not self.train_rows:
            raise ValueError(f"{config['data']['manifest']}: no rows with split 'train' to train on")
        self.val_rows = splits["val"] or self.train_rows[:1]
        from medgen.dataset.transforms import collate_reports

        self.dataset = _dataset(config, self.train_rows)
        self.stream = BatchStream(self.dataset, self.tc["batch_size"], self.ctx, seed=self.seed,
                                  collate_fn=collate_reports, num_workers=config["data"].get("num_workers", 0))
        self.checkpoints = CheckpointManager(self.out / "checkpoints" / "vae", keep_last=int(self.tc.get("keep_last", 3)),
                                             enabled=self.ctx.is_main)
        self.step = 0
        self.start_step = 0
        if resume:
            self._resume()

    # ---------------------------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        return {"step": self.step, "optimizer_g": self.opt_g.state_dict(), "optimizer_d": self.opt_d.state_dict(),
                "clip_g": self.clip_g.state_dict(), "clip_d": self.clip_d.state_dict(),
                "data": self.stream.state_dict(), "rng": get_rng_state()}

    def save(self) -> Path | None:
        return self.checkpoints.save(
            self.step, weights={"autoencoder": self.autoencoder.state_dict(), "discriminator": self.discriminator.state_dict()},
            state=self.state(), meta={"stage": "vae", "config": public_config(self.config)})

    def _resume(self) -> None:
        path = self.ctx.broadcast_object(str(self.checkpoints.latest() or ""))
        if not path:
            return  # nothing to resume: start from scratch
        ckpt = load_checkpoint(path)
        self.autoencoder.load_state_dict(ckpt.weights["autoencoder"])
        self.discriminator.load_state_dict(ckpt.weights["discriminator"])
        state = ckpt.state
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.clip_g.load_state_dict(state["clip_g"])
        self.clip_d.load_state_dict(state["clip_d"])
        self.stream.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        self.step = self.start_step = int(state["step"])

    # ------------------------------------------------------------------------------------- training
    def train_step(self, x: torch.Tensor, layout: torch.Tensor | None = None) -> dict[str, float]:
        """One generator (+ discriminator) update on images `x` (B, 1, X, Y, Z) in [-1, 1] (with their layout
        channels (B, C, X, Y, Z) for a layout-aware autoencoder)."""
        tc, total = self.tc, int(self.tc["steps"])
        for opt in (self.opt_g, self.opt_d):
            set_learning_rates(opt, self.step, int(tc["warmup"]), total)
        adversarial = float(tc["adv_weight"]) > 0 and self.step >= int(tc["adv_start"])
        bf16 = bool(tc.get("bf16", False))
        self.autoencoder.train()
        self.discriminator.train()

        with autocast(self.device, bf16):
            recon, z_mu, z_sigma = self.ae(x) if layout is None else self.ae(x, layout)
        weights = finding_weights(layout, float(tc.get("finding_weight", 0.0)))
        l1 = ((recon.float() - x).abs() * weights).mean()
        kl = kl_divergence(z_mu, z_sigma)
        loss_g = l1 + float(tc["kl_weight"]) * kl
        logs = {"vae/l1": l1.item(), "vae/kl": kl.item(), "vae/lr": self.opt_g.param_groups[0]["lr"]}
        if adversarial:  # the raw discriminator (no DDP hooks); its parameters get no gradient here
            self.discriminator.requires_grad_(False)
            with autocast(self.device, bf16):
                fake_logits = self.discriminator(recon)[-1]
            gen_adv = self.adv_loss(fake_logits.float(), target_is_real=True, for_discriminator=False)
            loss_g = loss_g + float(tc["adv_weight"]) * gen_adv
            self.discriminator.requires_grad_(True)
            logs["vae/gen_adv"] = gen_adv.item()
        loss_g.backward()
        norm = self.clip_g(self.autoencoder.parameters())
        finite_step(self.opt_g, norm, self.clip_g)
        logs.update({"vae/loss": loss_g.item(), "vae/grad_norm": norm})

        if adversarial:  # real and fake through ONE discriminator forward (one DDP forward per backward)
            with autocast(self.device, bf16):
                logits = self.disc(torch.cat([recon.detach(), x]))[-1].float()
            fake, real = logits.split(x.shape[0])
            loss_d = 0.5 * (self.adv_loss(fake, target_is_real=False, for_discriminator=True)
                            + self.adv_loss(real, target_is_real=True, for_discriminator=True))
            loss_d.backward()
            norm_d = self.clip_d(self.discriminator.parameters())
            finite_step(self.opt_d, norm_d, self.clip_d)
            logs.update({"vae/disc_loss": loss_d.item(), "vae/disc_grad_norm": norm_d})
        self.step += 1
        return logs

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Reconstruct the first validation volume; log its L1 and write a PNG (input above reconstruction)."""
        from medgen.dataset.transforms import collate_reports
        from medgen.io.png import render_grid
        from medgen.volume import Volume, intensity_to_hu

        if not hasattr(self, "_val_batch"):
            self._val_batch = collate_reports([_dataset(self.config, self.val_rows[:1])[0]])
        batch = self._val_batch
        x = _image(batch, self.device)
        layout = batch_layout(batch, self.device)
        self.autoencoder.eval()
        recon = (self.autoencoder.reconstruct(x) if layout is None else self.autoencoder.reconstruct(x, layout))
        recon = recon.float().clamp(-1, 1)
        l1 = float((recon - x).abs().mean())
        affine = batch["image"].affine[0].cpu().numpy()
        volumes = [Volume(intensity_to_hu(v[0, 0].cpu().numpy()), affine) for v in (x, recon)]
        name = self.val_rows[0]["id"]
        render_grid(volumes, [f"{name} input", f"VAE step {self.step} reconstruction (L1 {l1:.4f})"],
                    self.out / "samples" / "vae" / f"step-{self.step:08d}.png")
        return {"vae/val_l1": l1}

    @torch.no_grad()
    def scale_factor(self, max_volumes: int = 32) -> float:
        """1 / std of the latent means of up to `max_volumes` training volumes."""
        from medgen.dataset.transforms import collate_reports

        self.autoencoder.eval()
        latents = []
        n = min(max_volumes, len(self.dataset))
        for start in range(0, n, int(self.tc["batch_size"])):
            items = [self.dataset[i] for i in range(start, min(n, start + int(self.tc["batch_size"])))]
            x = _image(collate_reports(items), self.device)
            latents.append(self.autoencoder.encode(x)[0].float().cpu())
        std = float(torch.cat(latents).std())
        return 1.0 / std if std > 0 and math.isfinite(std) else 1.0

    def run(self) -> Path:
        tc, total = self.tc, int(self.tc["steps"])
        logger = RunLogger(self.out / "logs" / "vae", enabled=self.ctx.is_main)
        batches = iter(self.stream)
        bar = tqdm(total=total, initial=self.step, desc="VAE", unit="step", disable=not self.progress)
        try:
            while self.step < total:
                batch = next(batches)
                x, layout = _image(batch, self.device), batch_layout(batch, self.device)
                patch = training_crop(tc, self.step)
                if patch:
                    both = x if layout is None else torch.cat([x, layout], 1)
                    both = random_patch(both, patch, seed=self.seed, step=self.step)
                    x, layout = both[:, :1], (None if layout is None else both[:, 1:])
                logs = self.train_step(x, layout)
                bar.update()
                bar.set_postfix(l1=f"{logs['vae/l1']:.4f}")
                if self.ctx.is_main and self.step % int(tc["validate_every"]) == 0:
                    logs.update(self.validate())
                logger.log(self.step, logs)
                if self.step % int(tc["checkpoint_every"]) == 0 or self.step == total:
                    self.save()
        finally:
            bar.close()
            logger.close()
        out = self.out / "autoencoder"
        if self.ctx.is_main:
            from medgen.models.autoencoder import TrainedAutoencoder, autoencoder_config

            scale = self.scale_factor(int(tc.get("scale_samples", 32)))
            data = self.config["data"]
            config = {**autoencoder_config(self.config["autoencoder"]), "scale_factor": scale,
                      "image_shape": list(data["shape"]), "spacing": list(data["spacing"]), "trained_steps": self.step}
            TrainedAutoencoder(self.autoencoder, config).save_pretrained(out)
        self.ctx.barrier()
        return out


def train_vae(config: dict, *, resume: bool = False, device=None, progress: bool = True) -> Path:
    """Train the autoencoder described by `config` (see ``configs/phantom-64.yaml``); return its output folder.

    Args:
        config: from `medgen.config.load_config`.
        resume: continue from the latest checkpoint in ``<output_dir>/checkpoints/vae`` (if any).
        device: "cpu", "cuda" (default: CUDA when available); under torchrun each rank uses its own GPU.
        progress: tqdm progress bar (rank 0).
    """
    return run_and_close(VAETrainer(config, resume=resume, device=device, progress=progress))
