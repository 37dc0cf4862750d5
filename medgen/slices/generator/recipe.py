"""The preview's training recipe, stage by stage, resumable: pairs -> autoencoder (ceiling measured) ->
base UNet -> refiner UNet -> saved model. Each finished stage is written under ``work/`` and reused by a
rerun, so a killed run picks up at the stage it was in."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medgen.slices.generator.autoencoder import (
    build_vae,
    latent_scale,
    reconstruction_error,
    train_preview_vae,
)
from medgen.slices.generator.data import PreviewPairs, build_pairs
from medgen.slices.generator.model import SlicePreviewModel, build_unet
from medgen.slices.generator.train import train_unet
from medgen.slices.sources import EVAL_SEED0, TRAIN_SEED0

DEFAULTS = {"n_subjects": 1200, "extra": 3, "size": 128, "vae_channels": [16, 32, 32], "latent_channels": 4,
            "vae_steps": 1200, "vae_batch": 8, "base_steps": 3000, "refiner_steps": 1500, "unet_batch": 16,
            "refiner_start": 250, "num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
            "unet": {"block_out_channels": [32, 48, 64], "attention_head_dim": 8, "time_embed_dim": 16},
            "fov_mm": 320.0, "n_ceiling": 40, "student_steps": 0, "teacher_steps": 64, "distill_steps_per_round": 400}


def _pairs(work: Path, name: str, n: int, seed0: int, options: dict) -> PreviewPairs:
    path = work / f"{name}.npz"
    if path.is_file():
        return PreviewPairs.load(path)
    pairs = build_pairs(n, seed0=seed0, extra=options["extra"], size=options["size"], fov_mm=options["fov_mm"])
    pairs.save(path)
    return pairs


def train_preview_model(out, *, text_encoder_dir, reader_dir, anatomy_bank_dir=None, work=None,
                        overwrite: bool = False, **options) -> dict:
    """Train every stage and write the model to `out`; returns the training record (also in preview.json)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    options = {**DEFAULTS, **options}
    out = Path(out)
    if out.exists() and not overwrite:
        from medgen.errors import OutputExistsError

        raise OutputExistsError(f"{out}: output exists (pass --overwrite to replace it)")
    work = Path(work) if work is not None else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    pairs = _pairs(work, "pairs", options["n_subjects"], TRAIN_SEED0, options)
    held_out = _pairs(work, "held_out", options["n_ceiling"], EVAL_SEED0, {**options, "extra": 0})
    record = json.loads((work / "record.json").read_text()) if (work / "record.json").is_file() else {}

    def save_record():
        (work / "record.json").write_text(json.dumps(record, indent=2) + "\n")

    if (work / "vae").is_dir():
        vae = AutoencoderKL.from_pretrained(work / "vae", low_cpu_mem_usage=False).eval()
    else:
        vae = build_vae(options["vae_channels"], options["latent_channels"])
        record["vae"] = train_preview_vae(vae, pairs, steps=options["vae_steps"], batch_size=options["vae_batch"])
        record["vae"]["ceiling_held_out"] = reconstruction_error(vae, held_out)
        vae.save_pretrained(work / "vae")
        save_record()
    factor = 2 ** (len(options["vae_channels"]) - 1)
    text = SlicePreviewModel.text_encoder_from(text_encoder_dir, reader_dir)
    config = {key: options[key] for key in ("size", "latent_channels", "refiner_start", "num_train_timesteps",
                                            "beta_schedule", "unet", "fov_mm")}
    config.update(factor=factor, scale=latent_scale(vae, pairs))
    sources = {"text_encoder": Path(text_encoder_dir).resolve(), "reader": Path(reader_dir).resolve(),
               "anatomy_bank": Path(anatomy_bank_dir).resolve() if anatomy_bank_dir else None}
    model = SlicePreviewModel(vae, None, text, config, None, sources)
    unets = {}
    for name, steps, t_range in (("base", options["base_steps"], (0, options["num_train_timesteps"])),
                                 ("refiner", options["refiner_steps"], (0, options["refiner_start"]))):
        if steps == 0:
            continue
        if (work / name).is_dir():
            unets[name] = UNet2DConditionModel.from_pretrained(work / name, low_cpu_mem_usage=False).eval()
            continue
        torch.manual_seed(0)
        unets[name] = build_unet(options["latent_channels"], options["size"] // factor, text.hidden_size,
                                 options["unet"])
        record[name] = train_unet(model, unets[name], pairs, steps=steps, batch_size=options["unet_batch"],
                                  t_range=t_range, name=name)
        unets[name].save_pretrained(work / name)
        save_record()
    model.base, model.refiner = unets["base"], unets.get("refiner")
    if options["student_steps"]:
        from medgen.slices.generator.distill import progressive_distillation

        if (work / "student").is_dir():
            model.student = UNet2DConditionModel.from_pretrained(work / "student", low_cpu_mem_usage=False).eval()
        else:
            model.student, record["distillation"] = progressive_distillation(
                model, pairs, teacher_steps=options["teacher_steps"], student_steps=options["student_steps"],
                steps_per_round=options["distill_steps_per_round"])
            model.student.save_pretrained(work / "student")
            save_record()
    model.config["training"] = {**record, "options": options, "n_pairs": len(pairs)}
    model.save_pretrained(out, overwrite=overwrite)
    return model.config["training"]
