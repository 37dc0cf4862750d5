"""medgen.models: the KL autoencoder, its discriminator, tiled encode/decode and the conditional UNet."""

from medgen.models.autoencoder import build_autoencoder, build_discriminator, latent_downsample_factor
from medgen.models.embeddings import DensityTextEmbedding
from medgen.models.tiling import decode_tiled, encode_tiled
from medgen.models.unet import ConditionalUNet

__all__ = [
    "ConditionalUNet",
    "DensityTextEmbedding",
    "build_autoencoder",
    "build_discriminator",
    "decode_tiled",
    "encode_tiled",
    "latent_downsample_factor",
]
