"""Gaussian diffusion with the cosine schedule: noising, the L1 eps loss, DDPM and DDIM steps.

Conventions: the paper's step t = 1..T is index t = 0..T-1 here (as in diffusers), and
index -1 stands for the clean data (abar = 1). Volumes enter the network in [-1, 1]
(`to_network`) and leave in [0, 1] (`to_data`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from physdiff.errors import ConfigError

PREDICTIONS = ("eps", "v")


def to_network(x: torch.Tensor) -> torch.Tensor:
    """Map intensities in [0, 1] to the network's range [-1, 1]."""
    return 2.0 * x - 1.0


def to_data(x: torch.Tensor) -> torch.Tensor:
    """Map the network's range [-1, 1] back to intensities in [0, 1]."""
    return (x + 1.0) / 2.0


def cosine_alpha_bar(t: np.ndarray | float, *, timesteps: int = 1000, s: float = 0.008) -> np.ndarray:
    """Closed form of Nichol & Dhariwal's schedule: abar(t) = f(t)/f(0), f(t) = cos^2(pi/2 (t/T + s)/(1 + s))."""
    f = lambda u: np.cos((np.asarray(u, dtype=np.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    return f(t) / f(0)


class GaussianDiffusion:
    """Cosine-schedule diffusion, T steps: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) z.

    beta_t = min(1 - abar(t+1)/abar(t), max_beta), abar_t = prod_{i<=t} (1 - beta_i), so that
    abar follows the closed form except where the cap bites (the last few steps).
    """

    def __init__(self, *, timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        if timesteps < 1:
            raise ConfigError(f"diffusion.timesteps must be >= 1, got {timesteps}")
        self.timesteps = int(timesteps)
        grid = np.arange(timesteps + 1)
        ratio = cosine_alpha_bar(grid[1:], timesteps=timesteps, s=s) / cosine_alpha_bar(grid[:-1], timesteps=timesteps, s=s)
        self.betas = np.minimum(1.0 - ratio, max_beta)  # float64 throughout, cast at use
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = np.cumprod(self.alphas)

    def abar(self, t: int) -> float:
        """abar_t, with abar_{-1} = 1 (clean data)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def _abar_batch(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        a = torch.as_tensor(self.alphas_cumprod, device=like.device)[t.long()]
        return a.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise clean x0 to step t (per-sample indices, shape (B,)): sqrt(abar) x0 + sqrt(1-abar) z."""
        a = self._abar_batch(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    @staticmethod
    def check_min_snr_gamma(gamma: float | None) -> None:
        """`min_snr_gamma` must be None (uniform weights) or > 0."""
        if gamma is not None and not gamma > 0:
            raise ConfigError(f"prior.train.min_snr_gamma must be > 0 (or null for uniform weights), got {gamma}")

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t) at per-sample indices t (float64)."""
        a = torch.as_tensor(self.alphas_cumprod)[t.long().cpu()]
        return a / (1 - a)

    @staticmethod
    def check_prediction(prediction: str) -> None:
        """`prediction` must be one of PREDICTIONS."""
        if prediction not in PREDICTIONS:
            raise ConfigError(f"prior.train.prediction must be one of {PREDICTIONS}, got {prediction!r}")

    def v_target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022) at per-sample indices t."""
        a = self._abar_batch(t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t, the eps that a v prediction implies."""
        a = self._abar_batch(t, x_t)
        return a.sqrt() * v + (1 - a).sqrt() * x_t

    def loss(self, model, x0: torch.Tensor, *, generator: torch.Generator | None = None,
             min_snr_gamma: float | None = None, prediction: str = "eps") -> torch.Tensor:
        """L1 loss of the model's prediction, t uniform in [0, T): ||eps_theta(x_t, t) - z||_1
        (mean) for `prediction="eps"` (the paper's), ||v_theta(x_t, t) - v||_1 for "v".

        v-prediction (ours, off by default) makes the nearly pure-noise steps predict the clean
        volume itself, whose global level (the black background) an eps model only implies
        through a division by sqrt(abar_t) ~ 0 there.

        With `min_snr_gamma` (ours, off by default; Hang et al. 2023, "Efficient Diffusion
        Training via Min-SNR Weighting Strategy") sample i's mean error is weighted by
        min(SNR_t, gamma) / SNR_t (eps; / (SNR_t + 1) for v), which damps the nearly clean
        steps whose eps error barely moves x0, and the batch mean of the weighted errors is
        returned.
        """
        self.check_min_snr_gamma(min_snr_gamma)
        self.check_prediction(prediction)
        t = torch.randint(0, self.timesteps, (x0.shape[0],), generator=generator, device="cpu").to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device="cpu").to(x0.device, x0.dtype)
        pred = model(self.q_sample(x0, t, noise), t)
        target = noise if prediction == "eps" else self.v_target(x0, t, noise)
        if min_snr_gamma is None:
            return F.l1_loss(pred, target)
        snr = self.snr(t)  # Min-SNR's weight of the v loss is min(SNR, gamma) / (SNR + 1)
        weight = (torch.clamp(snr, max=float(min_snr_gamma)) / (snr if prediction == "eps" else snr + 1))
        weight = weight.to(x0.device, torch.float32)
        per_sample = (pred.float() - target.float()).abs().flatten(1).mean(dim=1)
        return (weight * per_sample).mean()

    def predict_x0(self, x_t: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        a = self.abar(t)
        return (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)

    def eps_from_x0(self, x_t: torch.Tensor, t: int, x0: torch.Tensor) -> torch.Tensor:
        """The noise that takes x0 to x_t: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
        a = self.abar(t)
        return (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a)

    def posterior(self, x_t: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int) -> tuple[torch.Tensor, float]:
        """Mean and variance of q(x_{t_prev} | x_t, x0); t_prev = t - 1 is the DDPM posterior.

        With abar = abar_t, abar' = abar_{t_prev} and b = 1 - abar/abar' (= beta_t for t_prev = t-1):
        mean = sqrt(abar') b / (1 - abar) x0 + sqrt(1 - b) (1 - abar') / (1 - abar) x_t,
        var = (1 - abar') / (1 - abar) b.  Skipped steps (t_prev < t - 1) are the respaced DDPM.
        """
        a, a_prev = self.abar(t), self.abar(t_prev)
        b = 1 - a / a_prev
        mean = math.sqrt(a_prev) * b / (1 - a) * x0 + math.sqrt(1 - b) * (1 - a_prev) / (1 - a) * x_t
        return mean, (1 - a_prev) / (1 - a) * b

    def ddpm_step(self, x_t: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int, noise: torch.Tensor | None) -> torch.Tensor:
        """Ancestral step x_{t_prev} = posterior mean + sigma_t z (Eq. 1 when x0 = predict_x0(x_t, eps))."""
        mean, var = self.posterior(x_t, x0, t, t_prev)
        return mean if noise is None or var == 0 else mean + math.sqrt(var) * noise

    def ddim_step(self, x_t: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int, *, eta: float,
                  noise: torch.Tensor | None) -> torch.Tensor:
        """DDIM step (Song et al. 2021) toward x0, with eps re-derived from (x_t, x0).

        x' = sqrt(abar') x0 + sqrt(1 - abar' - sigma^2) eps + sigma z,
        sigma = eta sqrt((1 - abar')/(1 - abar)) sqrt(1 - abar/abar').  Re-deriving eps makes the
        step land on the corrected x0 (DART), and makes eta = 1 equal the DDPM posterior.
        """
        a, a_prev = self.abar(t), self.abar(t_prev)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        eps = self.eps_from_x0(x_t, t, x0)
        out = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        return out if noise is None or sigma == 0 else out + sigma * noise

    def schedule(self, steps: int | None, *, start: float = 1.0) -> list[int]:
        """Descending step indices for a reverse loop of `steps` steps, evenly spaced, ending at 0.

        "trailing" spacing (Lin et al. 2024): starts at T-1, so the first step sees pure noise.
        With `start` < 1 only the indices below start * T are kept (at least the last one): the
        same spacing, entered part-way.
        """
        steps = self.timesteps if steps is None else int(steps)
        if not 1 <= steps <= self.timesteps:
            raise ConfigError(f"sampling steps must be in [1, {self.timesteps}], got {steps}")
        if not 0.0 < start <= 1.0:
            raise ConfigError(f"start must be in (0, 1], got {start}")
        ts = [int(t) for t in np.round(np.arange(self.timesteps, 0, -self.timesteps / steps)).astype(int) - 1]
        kept = [t for t in ts if t < start * self.timesteps]
        return kept or ts[-1:]


class EpsFromV(nn.Module):
    """A v-prediction network seen as an eps-prediction one: forward(x_t, t) returns
    eps = sqrt(abar_t) v_theta(x_t, t) + sqrt(1 - abar_t) x_t, so samplers, seam blending and
    DART, which all work with eps, take either kind of model. `net` holds the weights."""

    def __init__(self, net: nn.Module, diffusion: GaussianDiffusion | None = None):
        super().__init__()
        self.net = net
        self.diffusion = diffusion or GaussianDiffusion()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.diffusion.eps_from_v(x, t, self.net(x, t).float())


def as_eps_model(net: nn.Module, prediction: str = "eps", diffusion: GaussianDiffusion | None = None) -> nn.Module:
    """`net` itself for an eps-prediction network, wrapped in `EpsFromV` for a v-prediction one."""
    GaussianDiffusion.check_prediction(prediction)
    return net if prediction == "eps" else EpsFromV(net, diffusion)
