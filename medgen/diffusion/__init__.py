"""medgen.diffusion: schedulers, classifier-free guidance and the sampling loop."""

from medgen.diffusion.guidance import Guidance, TextEncodingLike, combine, expand_conditions
from medgen.diffusion.sampler import sample_latents
from medgen.diffusion.schedulers import add_noise, build_scheduler, sample_timesteps, training_target

__all__ = [
    "Guidance",
    "TextEncodingLike",
    "add_noise",
    "build_scheduler",
    "combine",
    "expand_conditions",
    "sample_latents",
    "sample_timesteps",
    "training_target",
]
