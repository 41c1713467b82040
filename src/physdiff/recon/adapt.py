"""Per-scan adaptation of the prior inside DART (ours; after Steerable Conditional Diffusion,
Barbano et al. 2023, and D3IP, Chung & Ye 2024).

The partition models get low-rank adapters (`physdiff.models.lora`), and at each reverse step
`iters` Adam steps fit the adapters so that the denoised estimate of the current x_t agrees
with the scan's own measurement: the loss is the problem's `fit_loss` of x0_hat(x_t) in data
units (MRI: ||M F x0_hat - y||^2 / ||M y||^2; 4D-STEM: the amplitude loss of Eq. (2) over
sum_p ||sqrt(I_p)||^2). The step itself uses the eps of the first fit's
forward pass, so a fit costs one backward pass more than a plain step, not a second forward. The base
weights stay frozen and the adapters start at zero, so before the first step the adapted
model is the plain one. No ground truth is used.

Overfitting the measured lines (the deep-image-prior failure) is watched on lines the fit never
sees (MRI: `physdiff.data.masks.holdout_lines`; 4D-STEM: a seeded fraction of the scan
positions; the problem's `split_measurement`): a first pass runs DART and the fit on the measured
lines less a held-out fraction, and after each fit records how well the adapted and the plain
models' x0 estimates predict the held-out lines. The number of fits after which the adapted
estimate's error relative to the plain one is lowest is the stop; the second pass, the
reconstruction, fits with all lines and freezes the adapters after that many fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch

from physdiff.errors import ConfigError
from physdiff.models.diffusion import GaussianDiffusion, to_data
from physdiff.models.lora import add_adapters, check_adapter_settings
from physdiff.models.sampling import partition_bounds, partition_devices, partition_eps


@dataclass(frozen=True)
class AdaptSettings:
    """`recon.dart.adapt`: rank and alpha of the adapters, Adam's lr, fits per reverse step,
    the held-out fraction of the lines outside the centre band (4D-STEM: of the scan positions), one adapter set shared by the G
    partitions or one each, and the fraction of the schedule (t / T at or below it) where fits
    are made."""

    rank: int = 4
    alpha: float = 4.0
    lr: float = 1e-3
    iters: int = 1
    holdout: float = 0.2
    shared: bool = False
    t_max: float = 0.5

    @classmethod
    def from_dict(cls, settings: dict) -> "AdaptSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"recon.dart.adapt: unknown setting(s) {unknown}; expected some of {sorted(known)}")
        out = cls(**settings)
        check_adapter_settings(out.rank, out.alpha)
        if not (isinstance(out.lr, (int, float)) and math.isfinite(out.lr) and out.lr > 0):
            raise ConfigError(f"recon.dart.adapt.lr must be a finite number > 0, got {out.lr!r}")
        if not isinstance(out.iters, int) or out.iters < 1:
            raise ConfigError(f"recon.dart.adapt.iters must be an integer >= 1, got {out.iters!r}")
        if not (isinstance(out.holdout, (int, float)) and 0.0 < out.holdout < 0.5):
            raise ConfigError(f"recon.dart.adapt.holdout must lie in (0, 0.5), got {out.holdout!r}")
        if not isinstance(out.shared, bool):
            raise ConfigError(f"recon.dart.adapt.shared must be true or false, got {out.shared!r}")
        if not (isinstance(out.t_max, (int, float)) and 0.0 < out.t_max <= 1.0):
            raise ConfigError(f"recon.dart.adapt.t_max must lie in (0, 1], got {out.t_max!r}")
        return out


class Fitter:
    """The `before_step` hook of `reverse_diffusion` that fits the adapters at each reverse step.

    `max_fits` stops fitting after that many reverse steps with a fit (None: never). With
    `held` (the held-out lines or positions of `problem`'s full measurement `full`) every fit records
    (adapted, plain) held-out errors of the x0 estimates, the adapted one before the fit.
    """

    def __init__(self, models: Sequence, params: Sequence[torch.nn.Parameter], problem, settings: AdaptSettings, *,
                 seam: str, devices=None, max_fits: int | None = None, plain: Sequence | None = None,
                 full=None, held: np.ndarray | None = None, diffusion: GaussianDiffusion | None = None):
        self.models, self.problem, self.settings, self.seam = list(models), problem, settings, seam
        self.diffusion = diffusion or GaussianDiffusion()
        self.devs = partition_devices(len(self.models), devices)
        self.optimizer = torch.optim.Adam(params, lr=settings.lr)
        self.max_fits, self.plain, self.full, self.held = max_fits, plain, full, held
        self.fits, self.log = 0, []

    def _data(self, x0: torch.Tensor) -> list[torch.Tensor]:
        transform = self.problem.transform
        return [transform.decode(to_data(x0[b, 0])) for b in range(x0.shape[0])]

    def _eps(self, models, x: torch.Tensor, t: int) -> torch.Tensor:
        return partition_eps(models, self.devs, partition_bounds(x.shape[2], len(models)), x, t, self.seam)

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor | None:
        """Fit at step t; returns the eps of x_t from the first fit's forward pass (the adapters as
        the earlier steps left them), which the reverse step then uses, or None where no fit is made."""
        if t > self.settings.t_max * self.diffusion.timesteps:
            return None
        if self.max_fits is not None and self.fits >= self.max_fits:
            return None
        for model in self.models:
            model.train(False)
        losses, step_eps = [], None
        for it in range(self.settings.iters):
            self.optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                eps = self._eps(self.models, x, t)
                x0 = self.diffusion.predict_x0(x, t, eps)
                volumes = self._data(x0)
                loss = torch.stack([self.problem.fit_loss(v) for v in volumes]).mean()
                loss.backward()
            if it == 0:
                step_eps = eps.detach()
            if it == 0 and self.held is not None:
                with torch.no_grad():
                    plain = self._data(self.diffusion.predict_x0(x, t, self._eps(self.plain, x, t)))
                adapted = np.mean([self.full.heldout_error(v.detach().cpu().numpy(), self.held) for v in volumes])
                base = np.mean([self.full.heldout_error(v.cpu().numpy(), self.held) for v in plain])
                self.log.append({"t": int(t), "fits": self.fits, "heldout_adapted": float(adapted),
                                 "heldout_plain": float(base)})
            self.optimizer.step()
            losses.append(float(loss.detach()))
        self.fits += 1
        if self.held is None:
            self.log.append({"t": int(t), "fits": self.fits, "fit_loss": losses[0], "fit_loss_last": losses[-1]})
        return step_eps

    def best_stop(self) -> int:
        """The number of fits after which the adapted estimate predicted the held-out lines best,
        relative to the plain model's at the same x_t (ties: the fewest)."""
        if not self.log:
            return 0
        ratio = [row["heldout_adapted"] / max(row["heldout_plain"], 1e-30) for row in self.log]
        return int(np.argmin(ratio))  # row i measured the adapters after i fits


def adapted_models(models: Sequence, settings: AdaptSettings, seed: int):
    """(copies of the models with fresh adapters, the adapters' parameters)."""
    return add_adapters(models, rank=settings.rank, alpha=settings.alpha, shared=settings.shared, seed=seed)
