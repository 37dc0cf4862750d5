"""medgen.training: VAE and latent-diffusion training, latent caching, checkpoints, DDP.

    from medgen.config import load_config
    from medgen.training import train_vae, cache_latents, train_ldm

    config = load_config("configs/phantom-64.yaml")
    train_vae(config)        # -> runs/phantom-64/autoencoder
    cache_latents(config)    # -> runs/phantom-64/latents (train_ldm does this itself when needed)
    train_ldm(config)        # -> runs/phantom-64/pipeline (ReportToVolumePipeline.from_pretrained)
"""

from medgen.training.latents import cache_latents
from medgen.training.ldm import train_ldm
from medgen.training.vae import train_vae

__all__ = ["cache_latents", "train_ldm", "train_vae"]
