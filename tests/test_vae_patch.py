"""Patch sampling for VAE training: right size, inside the volume, repeatable per (seed, step)."""

import torch

from medgen.training.vae import random_patch, training_crop


def test_random_patch_shape_and_content():
    x = torch.arange(2 * 1 * 8 * 10 * 12, dtype=torch.float32).reshape(2, 1, 8, 10, 12)
    patch = random_patch(x, 4, seed=0, step=3)
    assert patch.shape == (2, 1, 4, 4, 4)
    # the patch is a contiguous sub-block of x: find its origin and compare exactly
    flat = x[0, 0]
    i, j, k = [int(v[0]) for v in torch.nonzero(flat == patch[0, 0, 0, 0, 0], as_tuple=True)]
    assert torch.equal(patch, x[:, :, i:i + 4, j:j + 4, k:k + 4])


def test_random_patch_repeatable_and_varies_with_step():
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.equal(random_patch(x, 8, seed=1, step=5), random_patch(x, 8, seed=1, step=5))
    starts = {tuple(random_patch(x, 8, seed=1, step=s).flatten()[:3].tolist()) for s in range(10)}
    assert len(starts) > 1


def test_random_patch_larger_than_volume_returns_volume():
    x = torch.randn(1, 1, 8, 8, 8)
    assert random_patch(x, 8, seed=0, step=0) is x
    assert random_patch(x, 16, seed=0, step=0) is x


def test_training_crop_switches_to_whole_volumes_for_the_last_steps():
    tc = {"steps": 10, "patch_size": 32, "full_volume_steps": 3}
    assert [training_crop(tc, s) for s in range(10)] == [32] * 7 + [None] * 3
    assert training_crop({"steps": 10, "patch_size": 32}, 9) == 32  # no whole-volume phase by default
    assert training_crop({"steps": 10, "patch_size": None, "full_volume_steps": 3}, 0) is None
