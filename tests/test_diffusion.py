"""Schedulers, training targets, classifier-free guidance and the sampling loop."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler as MonaiDDIM
from monai.networks.schedulers import DDPMScheduler, RFlowScheduler

from medgen.diffusion import (
    Guidance,
    add_noise,
    build_scheduler,
    combine,
    expand_conditions,
    sample_latents,
    sample_timesteps,
    training_target,
)
from medgen.diffusion.guidance import active_branches
from medgen.models import ConditionalUNet

D_TXT = 16
BASE = {
    "num_train_timesteps": 1000,
    "schedule": "scaled_linear_beta",
    "beta_start": 0.0015,
    "beta_end": 0.0195,
}


@dataclass
class Enc:
    token_states: torch.Tensor
    attention_mask: torch.Tensor
    pooled: torch.Tensor


def make_encoding(b: int, length: int, seed: int) -> Enc:
    g = torch.Generator().manual_seed(seed)
    return Enc(
        torch.randn(b, length, D_TXT, generator=g),
        torch.ones(b, length, dtype=torch.long),
        torch.randn(b, D_TXT, generator=g),
    )


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    net = ConditionalUNet(
        spatial_dims=3,
        channels=(8, 16),
        attention_levels=(False, True),
        num_head_channels=8,
        norm_num_groups=4,
        cross_attention_dim=D_TXT,
        pooled_dim=D_TXT,
    ).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.05)
    return net


# --------------------------------------------------------------------------- schedulers


def test_build_scheduler_types_and_errors():
    assert isinstance(build_scheduler({"name": "ddpm", **BASE}), DDPMScheduler)
    ddim = build_scheduler({"name": "ddim", **BASE, "prediction_type": "v_prediction"})
    assert isinstance(ddim, MonaiDDIM) and ddim.prediction_type == "v_prediction"
    assert ddim.clip_sample is False
    rflow = build_scheduler({"name": "rflow", **BASE, "prediction_type": "v_prediction", "spatial_dim": 3})
    assert isinstance(rflow, RFlowScheduler)
    assert rflow.medgen_config["name"] == "rflow"
    with pytest.raises(ValueError):
        build_scheduler({"name": "euler"})
    with pytest.raises(ValueError):
        build_scheduler({"name": "ddim", "beta_strat": 0.1})
    with pytest.raises(ValueError):
        build_scheduler({"name": "rflow", "prediction_type": "epsilon"})


@pytest.mark.parametrize("n", [1, 3, 4, 25, 1000])
def test_ddim_timesteps_consistent_with_step(n):
    s = build_scheduler({"name": "ddim", **BASE})
    s.set_timesteps(n)
    ts = s.timesteps.tolist()
    assert ts[0] == 999 and len(ts) == n and ts == sorted(ts, reverse=True)
    k = 1000 // n
    for a, b in zip(ts, ts[1:], strict=False):
        assert a - k == b  # MONAI's step jumps to t - T // n: exactly the next timestep


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "ddpm", "prediction_type": "epsilon"},
        {"name": "ddpm", "prediction_type": "v_prediction"},
        {"name": "ddim", "prediction_type": "epsilon"},
        {"name": "ddim", "prediction_type": "v_prediction"},
        {"name": "rflow"},
    ],
)
def test_training_target_consistent_with_step(cfg):
    s = build_scheduler({**BASE, **cfg})
    torch.manual_seed(0)
    x0 = torch.randn(3, 4, 6, 6, 6)
    noise = torch.randn_like(x0)
    t = torch.tensor([10, 500, 990])
    xt = add_noise(s, x0, noise, t)
    target = training_target(s, x0, noise, t)
    if cfg["name"] == "rflow":
        torch.testing.assert_close(target, x0 - noise)
    elif cfg["prediction_type"] == "epsilon":
        assert torch.equal(target, noise)
    else:
        torch.testing.assert_close(target, s.get_velocity(x0, noise, t))
    # feeding the exact target to the scheduler's step recovers the clean latents
    if cfg["name"] == "rflow":
        s.set_timesteps(10, input_img_size_numel=6**3)
    else:
        s.set_timesteps(10)
    for i in range(3):
        ti = int(t[i])
        _, x0_hat = s.step(target[i : i + 1], ti, xt[i : i + 1])
        torch.testing.assert_close(x0_hat, x0[i : i + 1], rtol=1e-3, atol=2e-3)


def test_add_noise_keeps_scheduler_precision():
    s = build_scheduler({"name": "ddpm", **BASE})
    x = torch.randn(2, 4, 4, 4, 4, dtype=torch.bfloat16)
    out = add_noise(s, x, torch.randn_like(x), torch.tensor([1, 2]))
    assert out.dtype == torch.bfloat16
    assert s.alphas_cumprod.dtype == torch.float32


@pytest.mark.parametrize("name", ["ddpm", "ddim", "rflow"])
def test_sample_timesteps(name):
    s = build_scheduler({"name": name, **BASE})
    a = sample_timesteps(s, 64, generator=torch.Generator().manual_seed(0))
    b = sample_timesteps(s, 64, generator=torch.Generator().manual_seed(0))
    c = sample_timesteps(s, 64, generator=torch.Generator().manual_seed(1))
    assert a.shape == (64,)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < 1000


def test_sample_timesteps_rflow_logit_normal_with_transform():
    s = build_scheduler(
        {"name": "rflow", "sample_method": "logit-normal", "use_timestep_transform": True, "spatial_dim": 3}
    )
    with pytest.raises(ValueError):
        sample_timesteps(s, 4)
    t = sample_timesteps(s, 16, generator=torch.Generator().manual_seed(0), latent_shape=(4, 16, 16, 16))
    assert t.shape == (16,) and (t >= 0).all() and (t <= 1000).all()


# --------------------------------------------------------------------------- guidance


def test_combine_matches_formula():
    b = 2
    e_u, e_t, e_td = (torch.randn(b, 4, 3, 3, 3) for _ in range(3))
    g = Guidance(text=4.0, density=2.0)
    out = combine(torch.cat([e_u, e_t, e_td]), b, g)
    expected = e_u + 4.0 * (e_t - e_u) + 2.0 * (e_td - e_t)
    torch.testing.assert_close(out, expected)
    # no density: plain CFG over two branches
    out2 = combine(torch.cat([e_u, e_t]), b, g, has_density=False)
    torch.testing.assert_close(out2, e_u + 4.0 * (e_t - e_u))


def test_branch_skipping():
    assert active_branches(Guidance(4.0, 2.0), True) == ("uncond", "text", "full")
    assert active_branches(Guidance(4.0, 2.0), False) == ("uncond", "text")
    assert active_branches(Guidance(1.0, 1.0), True) == ("full",)
    assert active_branches(Guidance(1.0, 1.0), False) == ("text",)
    assert active_branches(Guidance(1.0, 3.0), True) == ("text", "full")
    assert active_branches(Guidance(3.0, 3.0), True) == ("uncond", "full")
    assert active_branches(Guidance(3.0, 0.0), True) == ("uncond", "text")
    b = 2
    e_u, e_t, e_td = (torch.randn(b, 4) for _ in range(3))
    torch.testing.assert_close(combine(e_td, b, Guidance(1.0, 1.0)), e_td)
    torch.testing.assert_close(
        combine(torch.cat([e_t, e_td]), b, Guidance(1.0, 3.0)), e_t + 3.0 * (e_td - e_t)
    )
    torch.testing.assert_close(
        combine(torch.cat([e_u, e_td]), b, Guidance(3.0, 3.0)), e_u + 3.0 * (e_td - e_u)
    )
    with pytest.raises(ValueError):
        combine(torch.cat([e_u, e_t]), b, Guidance(1.0, 1.0))


def test_expand_conditions_layout():
    enc = make_encoding(2, 7, seed=0)
    null = make_encoding(1, 3, seed=1)
    dens = torch.tensor([0.2, float("nan")])
    cond = expand_conditions(enc, null, dens, Guidance(4.0, 2.0))
    assert cond["token_states"].shape == (6, 7, D_TXT)
    assert cond["attention_mask"].shape == (6, 7) and cond["pooled"].shape == (6, D_TXT)
    # branch 0: null text (padded to 7 with mask 0), NaN density
    assert torch.equal(cond["attention_mask"][0], torch.tensor([1, 1, 1, 0, 0, 0, 0]))
    torch.testing.assert_close(cond["pooled"][:2], null.pooled.expand(2, -1))
    assert torch.isnan(cond["density"][:4]).all()
    # branches 1-2: the text; branch 2 carries the density
    torch.testing.assert_close(cond["token_states"][2:4], enc.token_states)
    torch.testing.assert_close(cond["token_states"][4:6], enc.token_states)
    assert cond["density"][4] == pytest.approx(0.2) and torch.isnan(cond["density"][5])
    # skipping
    assert expand_conditions(enc, null, None, Guidance(4.0, 2.0))["pooled"].shape[0] == 4
    assert expand_conditions(enc, null, dens, Guidance(1.0, 1.0))["pooled"].shape[0] == 2
    assert expand_conditions(enc, null, dens)["pooled"].shape[0] == 6


# --------------------------------------------------------------------------- sampler


def _sample(unet, scheduler, seed, density="default", guidance=None, steps=2, **kw):
    if isinstance(density, str):
        density = torch.tensor([0.3, 0.9])
    return sample_latents(
        unet,
        scheduler,
        encoding=make_encoding(2, 5, seed=10),
        null_encoding=make_encoding(1, 2, seed=11),
        density=density,
        latent_shape=(4, 8, 8, 8),
        num_inference_steps=steps,
        guidance=guidance or Guidance(),
        generator=torch.Generator().manual_seed(seed),
        progress=False,
        **kw,
    )


@pytest.mark.parametrize("name", ["ddpm", "ddim", "rflow"])
def test_sampler_deterministic_per_seed(unet, name):
    s = build_scheduler({"name": name, **BASE})
    a = _sample(unet, s, seed=0)
    b = _sample(unet, s, seed=0)
    c = _sample(unet, s, seed=1)
    assert a.shape == (2, 4, 8, 8, 8) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_sampler_one_batched_forward_per_step(unet):
    calls = []
    handle = unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        s = build_scheduler({"name": "ddim", **BASE})
        _sample(unet, s, seed=0, steps=3)
        assert calls == [6, 6, 6]
        calls.clear()
        _sample(unet, s, seed=0, steps=2, density=None)
        assert calls == [4, 4]
        calls.clear()
        _sample(unet, s, seed=0, steps=2, guidance=Guidance(1.0, 1.0))
        assert calls == [2, 2]
    finally:
        handle.remove()


def test_sampler_guidance_and_density_matter(unet):
    s = build_scheduler({"name": "ddim", **BASE})
    base = _sample(unet, s, seed=0)
    other_density = _sample(unet, s, seed=0, density=torch.tensor([0.9, 0.9]))
    no_guidance = _sample(unet, s, seed=0, guidance=Guidance(1.0, 1.0))
    assert not torch.allclose(base[0], other_density[0])
    torch.testing.assert_close(base[1], other_density[1])  # per-sample independence
    assert not torch.allclose(base, no_guidance)


def test_sampler_with_weights_one_equals_conditional_only(unet):
    """w_t = w_d = 1 is exactly conditional sampling: compare with a hand-written DDIM loop."""
    s = build_scheduler({"name": "ddim", **BASE})
    enc = make_encoding(2, 5, seed=10)
    dens = torch.tensor([0.3, 0.9])
    out = _sample(unet, s, seed=0, guidance=Guidance(1.0, 1.0), steps=2)
    x = torch.randn((2, 4, 8, 8, 8), generator=torch.Generator().manual_seed(0))
    ref = build_scheduler({"name": "ddim", **BASE})
    ref.set_timesteps(2)
    with torch.no_grad():
        for t in ref.timesteps:
            eps = unet(
                x,
                t.expand(2),
                token_states=enc.token_states,
                attention_mask=enc.attention_mask,
                pooled=enc.pooled,
                density=dens,
            )
            x, _ = ref.step(eps, int(t), x)
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)


def test_sampler_accepts_text_encoding_dataclass(unet):
    text_mod = pytest.importorskip("medgen.text.encoder")
    enc = text_mod.TextEncoding(
        torch.randn(1, 4, D_TXT), torch.ones(1, 4, dtype=torch.long), torch.randn(1, D_TXT)
    )
    null = text_mod.TextEncoding(
        torch.zeros(1, 2, D_TXT), torch.ones(1, 2, dtype=torch.long), torch.zeros(1, D_TXT)
    )
    s = build_scheduler({"name": "rflow"})
    z = sample_latents(
        unet,
        s,
        encoding=enc,
        null_encoding=null,
        density=None,
        latent_shape=(1, 4, 8, 8, 8),
        num_inference_steps=2,
        guidance=Guidance(),
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert z.shape == (1, 4, 8, 8, 8)


def test_sampler_2d():
    torch.manual_seed(0)
    net = ConditionalUNet(
        spatial_dims=2,
        channels=(8, 16),
        attention_levels=(False, True),
        num_head_channels=8,
        norm_num_groups=4,
        cross_attention_dim=D_TXT,
        pooled_dim=D_TXT,
    ).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.05)
    for name in ("ddim", "rflow"):
        z = sample_latents(
            net,
            build_scheduler({"name": name, **BASE}),
            encoding=make_encoding(2, 5, seed=0),
            null_encoding=make_encoding(1, 2, seed=1),
            density=torch.tensor([0.1, 0.7]),
            latent_shape=(4, 8, 8),
            num_inference_steps=2,
            guidance=Guidance(),
            generator=torch.Generator().manual_seed(0),
            progress=False,
        )
        assert z.shape == (2, 4, 8, 8) and torch.isfinite(z).all()
    with pytest.raises(ValueError):
        _ = sample_latents(
            net,
            build_scheduler({"name": "ddim", **BASE}),
            encoding=make_encoding(2, 5, seed=0),
            null_encoding=make_encoding(1, 2, seed=1),
            density=None,
            latent_shape=(4, 8, 8, 8),
            num_inference_steps=2,
            guidance=Guidance(),
            progress=False,
        )
