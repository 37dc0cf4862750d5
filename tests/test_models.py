"""Autoencoder / discriminator builders and the conditional UNet (shapes, conditioning paths, masking)."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.blocks import CrossAttentionBlock
from monai.networks.nets import AutoencoderKL, PatchDiscriminator

from medgen.models import (
    ConditionalUNet,
    DensityTextEmbedding,
    build_autoencoder,
    build_discriminator,
    latent_downsample_factor,
)
from medgen.models.unet import MaskedCrossAttentionBlock, pack_context

D_TXT = 16


def tiny_unet(spatial_dims: int = 3, seed: int = 0) -> ConditionalUNet:
    torch.manual_seed(seed)
    unet = ConditionalUNet(
        spatial_dims=spatial_dims,
        in_channels=4,
        out_channels=4,
        channels=(8, 16),
        attention_levels=(False, True),
        num_res_blocks=1,
        num_head_channels=8,
        norm_num_groups=4,
        cross_attention_dim=D_TXT,
        pooled_dim=D_TXT,
    ).eval()
    # MONAI zero-initialises the output convs (and we the added embedding): randomise everything so
    # that every input can influence the output in these tests.
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.2)
    return unet


def conditions(b: int = 2, length: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return {
        "token_states": torch.randn(b, length, D_TXT, generator=g),
        "attention_mask": torch.ones(b, length, dtype=torch.long),
        "pooled": torch.randn(b, D_TXT, generator=g),
        "density": torch.tensor([0.3, 0.8])[:b],
    }


def run(unet, x, t, **cond):
    with torch.no_grad():
        return unet(x, t, **cond)


# --------------------------------------------------------------------------- autoencoder


def test_autoencoder_defaults_and_shapes_3d():
    ae = build_autoencoder({})
    assert isinstance(ae, AutoencoderKL)
    assert latent_downsample_factor({}) == 4
    ae = build_autoencoder({"channels": [8, 16], "norm_num_groups": 4, "latent_channels": 4})
    assert latent_downsample_factor({"channels": [8, 16]}) == 2
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        recon, mu, sigma = ae(x)
        z = ae.encode_stage_2_inputs(x)
    assert recon.shape == x.shape
    assert mu.shape == sigma.shape == z.shape == (1, 4, 8, 8, 8)


def test_autoencoder_2d_and_discriminator():
    ae = build_autoencoder(
        {"spatial_dims": 2, "channels": (8, 16, 16), "norm_num_groups": 4, "latent_channels": 3}
    )
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        recon, mu, _ = ae(x)
    assert recon.shape == x.shape and mu.shape == (2, 3, 8, 8)
    disc = build_discriminator({"spatial_dims": 3, "num_layers_d": 2, "channels": 8})
    assert isinstance(disc, PatchDiscriminator)
    with torch.no_grad():
        out = disc(torch.randn(2, 1, 32, 32, 32))
    assert out[-1].shape[:2] == (2, 1) and out[-1].ndim == 5  # last element: the patch logits


def test_latent_downsample_factor_matches_autoencoder():
    cfg = {"channels": [8, 8, 16], "norm_num_groups": 4, "latent_channels": 2}
    ae = build_autoencoder(cfg)
    with torch.no_grad():
        z = ae.encode_stage_2_inputs(torch.randn(1, 1, 16, 16, 16))
    assert z.shape[2:] == (16 // latent_downsample_factor(cfg),) * 3


# --------------------------------------------------------------------------- UNet


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_unet_shapes(spatial_dims):
    unet = tiny_unet(spatial_dims)
    x = torch.randn(2, 4, *(8,) * spatial_dims)
    out = run(unet, x, torch.tensor([10, 900]), **conditions())
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert unet.num_cross_attention_blocks >= 2


def test_fresh_unet_added_embedding_starts_at_zero():
    torch.manual_seed(0)
    unet = ConditionalUNet(
        channels=(8, 16),
        attention_levels=(False, True),
        num_head_channels=8,
        norm_num_groups=4,
        cross_attention_dim=D_TXT,
        pooled_dim=D_TXT,
    )
    emb = unet.condition_embedding
    out = emb(torch.tensor([0.5, float("nan")]), torch.randn(2, D_TXT))
    assert torch.equal(out, torch.zeros_like(out))


def test_config_is_json_and_rebuilds():
    unet = tiny_unet()
    cfg = json.loads(json.dumps(unet.config))
    clone = ConditionalUNet.from_config(cfg)
    clone.load_state_dict(unet.state_dict())
    x = torch.randn(2, 4, 8, 8, 8)
    cond = conditions()
    torch.testing.assert_close(
        run(clone.eval(), x, torch.tensor([5, 5]), **cond), run(unet, x, torch.tensor([5, 5]), **cond)
    )


def test_density_nan_uses_null_vector_and_changes_output():
    unet = tiny_unet()
    emb = unet.condition_embedding
    pooled = torch.randn(2, D_TXT)
    with torch.no_grad():
        e = emb(torch.tensor([float("nan"), 0.4]), pooled)
        text_only = emb.text_proj(pooled)
    torch.testing.assert_close(e[0], emb.density_null + text_only[0])
    assert not torch.allclose(e[1], emb.density_null + text_only[1])

    x = torch.randn(2, 4, 8, 8, 8)
    t = torch.tensor([100, 100])
    cond = conditions()
    a = run(unet, x, t, **cond)
    b = run(unet, x, t, **{**cond, "density": torch.tensor([float("nan"), 0.8])})
    assert not torch.allclose(a[0], b[0], atol=1e-5)  # sample 0: 0.3 -> unknown
    torch.testing.assert_close(a[1], b[1])  # sample 1 unchanged
    # None == all unknown
    c = run(unet, x, t, **{**cond, "density": None})
    d = run(unet, x, t, **{**cond, "density": torch.tensor([float("nan"), float("nan")])})
    torch.testing.assert_close(c, d)
    # different numeric densities give different outputs
    e2 = run(unet, x, t, **{**cond, "density": torch.tensor([0.9, 0.8])})
    assert not torch.allclose(a[0], e2[0], atol=1e-5)


def test_pooled_and_tokens_change_output():
    unet = tiny_unet()
    x = torch.randn(2, 4, 8, 8, 8)
    t = torch.tensor([300, 300])
    cond = conditions()
    base = run(unet, x, t, **cond)
    other_pooled = run(unet, x, t, **{**cond, "pooled": cond["pooled"] + 1.0})
    other_tokens = run(unet, x, t, **{**cond, "token_states": cond["token_states"] * 1.5})
    other_t = run(unet, x, torch.tensor([700, 700]), **cond)
    for other in (other_pooled, other_tokens, other_t):
        assert not torch.allclose(base, other, atol=1e-5)


def test_padded_tokens_are_ignored():
    unet = tiny_unet()
    x = torch.randn(2, 4, 8, 8, 8)
    t = torch.tensor([50, 500])
    cond = conditions(length=5)
    # sample 1 has only 3 real tokens
    cond["attention_mask"][1, 3:] = 0
    base = run(unet, x, t, **cond)
    # same texts, padded to L = 9 with garbage in the padded states
    tok = torch.cat([cond["token_states"], 5 * torch.randn(2, 4, D_TXT)], dim=1)
    tok[1, 3:5] = 7.0
    mask = torch.cat([cond["attention_mask"], torch.zeros(2, 4, dtype=torch.long)], dim=1)
    padded = run(unet, x, t, **{**cond, "token_states": tok, "attention_mask": mask})
    torch.testing.assert_close(padded, base, rtol=1e-5, atol=1e-5)
    # ...and sample 1 equals the same text given alone without padding
    alone = run(
        unet,
        x[1:],
        t[1:],
        token_states=cond["token_states"][1:, :3],
        attention_mask=torch.ones(1, 3),
        pooled=cond["pooled"][1:],
        density=cond["density"][1:],
    )
    torch.testing.assert_close(alone, base[1:], rtol=1e-5, atol=1e-5)


def test_masked_cross_attention_matches_monai_without_padding():
    torch.manual_seed(0)
    block = CrossAttentionBlock(
        hidden_size=16, num_heads=2, hidden_input_size=8, context_input_size=D_TXT, dim_head=8
    )
    masked = MaskedCrossAttentionBlock(
        hidden_size=16, num_heads=2, hidden_input_size=8, context_input_size=D_TXT, dim_head=8
    )
    masked.load_state_dict(block.state_dict())
    x, ctx = torch.randn(2, 10, 8), torch.randn(2, 4, D_TXT)
    with torch.no_grad():
        ref = block(x, context=ctx)
        out = masked(x, context=pack_context(ctx, torch.ones(2, 4)))
        # a row with no valid token gives finite output
        empty = masked(x, context=pack_context(ctx, torch.zeros(2, 4)))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(empty).all()


def test_gradients_reach_conditioning_parameters():
    torch.manual_seed(0)
    unet = ConditionalUNet(
        channels=(8, 16),
        attention_levels=(False, True),
        num_head_channels=8,
        norm_num_groups=4,
        cross_attention_dim=D_TXT,
        pooled_dim=D_TXT,
    )
    cond = conditions()
    cond["density"] = torch.tensor([float("nan"), 0.5])
    out = unet(torch.randn(2, 4, 8, 8, 8), torch.tensor([1, 2]), **cond)
    # the output conv is zero-initialised by MONAI, so use a loss through its bias/weight path
    (out - torch.randn_like(out)).pow(2).mean().backward()
    emb = unet.condition_embedding
    for p in (emb.text_proj.weight, emb.density_mlp[-1].weight):
        assert p.grad is not None
    assert unet.unet.out[2].conv.weight.grad.abs().sum() > 0


def test_density_text_embedding_standalone():
    emb = DensityTextEmbedding(32, 12)
    with torch.no_grad():
        for p in emb.parameters():
            p.normal_()
    out = emb(torch.tensor([0.0, 0.5, float("nan")]), torch.randn(3, 12))
    assert out.shape == (3, 32) and torch.isfinite(out).all()
