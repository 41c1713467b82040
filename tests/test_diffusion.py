"""Cosine-schedule diffusion against closed forms and against diffusers' schedulers."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from physdiff.errors import ConfigError
from physdiff.models.diffusion import EpsFromV, GaussianDiffusion, as_eps_model, cosine_alpha_bar, to_data, to_network

T = 1000


@pytest.fixture(scope="module")
def diff():
    return GaussianDiffusion(timesteps=T)


def _x(seed, shape=(2, 1, 3, 4, 4)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_alpha_bar_follows_cosine_closed_form_until_the_beta_cap(diff):
    uncapped = diff.betas < 0.999
    closed = cosine_alpha_bar(np.arange(1, T + 1))  # index t is the paper's step t + 1
    np.testing.assert_allclose(diff.alphas_cumprod[uncapped], closed[uncapped], rtol=1e-10)
    assert uncapped.sum() >= T - 2  # the cap bites only at the very end
    assert 0.999 < diff.alphas_cumprod[0] < 1 and diff.alphas_cumprod[-1] < 1e-6


def test_schedule_matches_diffusers_squaredcos(diff):
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    np.testing.assert_allclose(diff.alphas_cumprod, ref.alphas_cumprod.double().numpy(), rtol=2e-5, atol=1e-9)


def test_q_sample_and_predict_x0_invert_each_other(diff):
    x0, z = _x(0), _x(1)
    for t in (0, 17, 500, 999):
        xt = diff.q_sample(x0, torch.full((2,), t), z)
        a = diff.abar(t)
        torch.testing.assert_close(xt, math.sqrt(a) * x0 + math.sqrt(1 - a) * z)
        torch.testing.assert_close(diff.predict_x0(xt, t, z), x0, rtol=1e-6, atol=1e-6 / math.sqrt(a))
        torch.testing.assert_close(diff.eps_from_x0(xt, t, x0), z)


def test_ddpm_posterior_mean_is_eq1(diff):
    """(x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) equals the posterior mean at x0(eps)."""
    xt, eps = _x(2), _x(3)
    for t in (1, 10, 400, 998):
        mean, var = diff.posterior(xt, diff.predict_x0(xt, t, eps), t, t - 1)
        beta, alpha, abar = diff.betas[t], diff.alphas[t], diff.alphas_cumprod[t]
        eq1 = (xt - beta / math.sqrt(1 - abar) * eps) / math.sqrt(alpha)
        torch.testing.assert_close(mean, eq1)
        assert var == pytest.approx((1 - diff.alphas_cumprod[t - 1]) / (1 - abar) * beta, rel=1e-12)


def test_ddpm_step_matches_diffusers(diff):
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    xt, eps = _x(4).float(), _x(5).float()
    for t in (0, 5, 300, 990):
        out = ref.step(eps, t, xt, generator=torch.Generator().manual_seed(7)).prev_sample
        z = torch.randn(xt.shape, generator=torch.Generator().manual_seed(7))
        ours = diff.ddpm_step(xt.double(), diff.predict_x0(xt.double(), t, eps.double()), t, t - 1, z.double())
        torch.testing.assert_close(ours.float(), out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_matches_diffusers_trailing(diff, eta):
    ref = DDIMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                        set_alpha_to_one=True, timestep_spacing="trailing", prediction_type="epsilon")
    ref.set_timesteps(50)
    ts = diff.schedule(50)
    assert ts == ref.timesteps.tolist()
    xt, eps, z = _x(6).float(), _x(7).float(), _x(8).float()
    for i in (0, 1, 25, 49):
        t, t_prev = ts[i], ts[i + 1] if i + 1 < len(ts) else -1
        out = ref.step(eps, t, xt, eta=eta, variance_noise=z).prev_sample
        x0 = diff.predict_x0(xt.double(), t, eps.double())
        ours = diff.ddim_step(xt.double(), x0, t, t_prev, eta=eta, noise=z.double())
        torch.testing.assert_close(ours.float(), out, rtol=1e-4, atol=1e-4)


def test_ddim_with_all_steps_and_eta_one_is_the_ddpm_posterior(diff):
    assert diff.schedule(T) == list(range(T - 1, -1, -1))
    xt, x0, z = _x(9), _x(10).clamp(-1, 1), _x(11)
    for t in (0, 1, 2, 250, 700, 999):
        ddim = diff.ddim_step(xt, x0, t, t - 1, eta=1.0, noise=None)
        mean, var = diff.posterior(xt, x0, t, t - 1)
        torch.testing.assert_close(ddim, mean, rtol=1e-10, atol=1e-10)
        # and the same noise scale
        noisy = diff.ddim_step(xt, x0, t, t - 1, eta=1.0, noise=z)
        torch.testing.assert_close(noisy - ddim, math.sqrt(var) * z, rtol=1e-8, atol=1e-10)


def test_last_step_lands_on_x0(diff):
    xt, x0 = _x(12), _x(13)
    torch.testing.assert_close(diff.ddim_step(xt, x0, 19, -1, eta=1.0, noise=_x(14)), x0)
    torch.testing.assert_close(diff.ddpm_step(xt, x0, 0, -1, _x(14)), x0)


def test_intensity_scaling_round_trips():
    x = torch.rand(3, 4)
    torch.testing.assert_close(to_data(to_network(x)), x)
    assert to_network(torch.tensor([0.0, 1.0])).tolist() == [-1.0, 1.0]


class _ZeroEps(torch.nn.Module):
    """A model that predicts eps = 0, so the loss is the (weighted) mean |noise|."""

    def forward(self, x, t):
        return torch.zeros_like(x)


def test_min_snr_weights_follow_the_snr_of_each_sample(diff):
    x0 = torch.zeros(6, 1, 2, 4, 4)
    draws = torch.Generator().manual_seed(3)
    t = torch.randint(0, diff.timesteps, (6,), generator=draws)
    noise = torch.randn(x0.shape, generator=draws)
    abar = torch.as_tensor(diff.alphas_cumprod)[t]
    snr = abar / (1 - abar)
    for gamma in (0.5, 5.0):
        expected = (torch.clamp(snr, max=gamma) / snr * noise.abs().flatten(1).mean(1)).mean()
        got = diff.loss(_ZeroEps(), x0, generator=torch.Generator().manual_seed(3), min_snr_gamma=gamma)
        torch.testing.assert_close(got, expected.float(), rtol=1e-6, atol=1e-7)
    # a gamma above every SNR weighs all steps alike: the paper's uniform L1
    uniform = diff.loss(_ZeroEps(), x0, generator=torch.Generator().manual_seed(3))
    huge = diff.loss(_ZeroEps(), x0, generator=torch.Generator().manual_seed(3), min_snr_gamma=float(snr.max()) * 2)
    torch.testing.assert_close(huge, uniform, rtol=1e-6, atol=1e-7)
    assert float(diff.loss(_ZeroEps(), x0, generator=torch.Generator().manual_seed(3), min_snr_gamma=0.5)) < float(uniform)
    with pytest.raises(ConfigError, match="min_snr_gamma"):
        diff.loss(_ZeroEps(), x0, min_snr_gamma=0.0)


def test_v_target_matches_diffusers_velocity_and_implies_the_noise(diff):
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    x0, z = _x(4).float(), _x(5).float()
    t = torch.tensor([0, 999])
    for tt in (torch.tensor([3, 640]), t):
        v = diff.v_target(x0, tt, z)
        torch.testing.assert_close(v, ref.get_velocity(x0, z, tt), rtol=1e-4, atol=1e-4)
        xt = diff.q_sample(x0, tt, z)
        torch.testing.assert_close(diff.eps_from_v(xt, tt, v), z, rtol=1e-5, atol=1e-5)


def test_v_loss_and_eps_wrapper(diff):
    x0 = _x(6).float()

    class Oracle(torch.nn.Module):
        """Predicts the true v of x0 from x_t (x0 known), so the v loss is 0 and its eps is exact."""

        def forward(self, xt, t):
            a = diff._abar_batch(t, xt)
            return a.sqrt() * (xt - a.sqrt() * x0) / (1 - a).sqrt() - (1 - a).sqrt() * x0

    gen = lambda: torch.Generator().manual_seed(2)
    assert float(diff.loss(Oracle(), x0, generator=gen(), prediction="v")) < 1e-5
    assert float(diff.loss(Oracle(), x0, generator=gen(), prediction="eps")) > 0.1  # v is not eps
    eps_model = as_eps_model(Oracle(), "v", diff)
    assert isinstance(eps_model, EpsFromV)
    assert float(diff.loss(eps_model, x0, generator=gen())) < 1e-4
    plain = _ZeroEps()
    assert as_eps_model(plain, "eps") is plain
    with pytest.raises(ConfigError, match="prediction"):
        as_eps_model(plain, "x0")
    with pytest.raises(ConfigError, match="prediction"):
        diff.loss(plain, x0, prediction="score")
