"""Assemble a `ReportToVolumePipeline` from an experiment config (e.g. ``configs/phantom-64.yaml``)."""

from __future__ import annotations

from medgen.pipelines.text_to_volume import CONFIG_DEFAULTS, ReportToVolumePipeline


def make_pipeline_config(experiment: dict, *, scale_factor: float = 1.0) -> dict:
    """The pipeline's config from an experiment config: name, autoencoder kwargs, latent `scale_factor`,
    default shape/spacing and the phantom version of its training subjects (``data:``; evaluation draws its reference
    subjects from that phantom), steps and sampling scheduler (``scheduler:``), guidance."""
    from medgen.models.autoencoder import autoencoder_config

    scheduler = experiment.get("scheduler", {})
    return {
        "name": experiment.get("name", CONFIG_DEFAULTS["name"]),
        "autoencoder": autoencoder_config(experiment["autoencoder"]),
        "scale_factor": float(scale_factor),
        "shape": list(experiment["data"]["shape"]),
        "spacing": list(experiment["data"]["spacing"]),
        "phantom_version": int(experiment["data"].get("phantom_version", 1)),
        "num_inference_steps": int(scheduler.get("num_inference_steps", CONFIG_DEFAULTS["num_inference_steps"])),
        "guidance": dict(experiment.get("guidance", CONFIG_DEFAULTS["guidance"])),
        "scheduler": dict(scheduler.get("sample") or scheduler.get("train") or {"name": "ddim"}),
    }


def build_pipeline(experiment: dict, text_encoder, *, scale_factor: float = 1.0) -> ReportToVolumePipeline:
    """A pipeline with freshly initialised autoencoder and UNet sized by `experiment` and `text_encoder`.

    Training fills in the weights (and the latent `scale_factor`); tests use it untrained.
    """
    from medgen.diffusion import build_scheduler
    from medgen.models import ConditionalUNet, build_autoencoder

    config = make_pipeline_config(experiment, scale_factor=scale_factor)
    hidden = text_encoder.hidden_size
    unet = ConditionalUNet(**experiment["unet"], cross_attention_dim=hidden, pooled_dim=hidden)
    return ReportToVolumePipeline(
        text_encoder, build_autoencoder(config["autoencoder"]), unet, build_scheduler(config["scheduler"]),
        config=config,
    )
