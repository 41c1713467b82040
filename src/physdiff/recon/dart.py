"""DART: Diffusion-Alternating Multi-slice Reconstruction (docs/method.md, "DART").

At every reverse step the G partition models predict their slabs, the stacked x0 goes through
the physics step Phi of the problem (MRI: Eq. 4; 4D-STEM: k steps of Eq. 5), and the DDPM or
DDIM update moves toward the corrected x0. After the last step Phi is applied once more, so
the returned volume is the physics step's own output, never clipped afterwards.

`start` < 1 (ours) enters the reverse loop part-way, from the problem's naive start (the
zero-filled image; V = 0) noised to that step, as Chung et al. 2022 ("Come-Closer-Diffuse-Faster")
do: the prior then refines what the measurement already shows instead of drawing from pure noise,
in start x `steps` model evaluations. start = 1 is the paper's full loop.

`correction="xt"` applies Phi to x_{t-1} instead; `"xt_noised"` brings the measurement to
x_{t-1}'s noise level first (as score-based MRI solvers do). Phi works in data units: the
prior's volumes are mapped with the problem's stored transform on the way in and out, inside
the hook. `adapt` fits low-rank adapters of the prior to the scan during the loop
(`physdiff.recon.adapt`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from physdiff.errors import ConfigError
from physdiff.models.diffusion import GaussianDiffusion, to_data, to_network
from physdiff.models.sampling import SEAMS, reverse_diffusion


@dataclass
class DARTResult:
    """The reconstruction (S, H, W) in data units, one log row per physics step, and timings."""

    volume: np.ndarray
    steps: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    adapt: dict | None = None


CORRECTIONS = ("x0", "xt", "xt_noised")


def dart(models: Sequence[Callable], problem, *, sampler: str = "ddim", steps: int = 50, eta: float = 1.0,
         correction: str = "x0", n_samples: int = 1, seed: int = 0, devices: Sequence | None = None,
         seam: str = "none", start: float = 1.0, mean_snr: float = 0.0, adapt: dict | None = None,
         progress: bool = True) -> DARTResult:
    """Reconstruct one measurement with DART; `models[g]` is partition g's eps network.

    `n_samples` > 1 runs that many chains side by side and averages them in data units before
    the final physics step. The noise is seeded by `seed`. `seam` is the partitioned sampler's
    seam handling ("none": plain stacking; "overlap" or "plateau": eps blended across partition
    boundaries, `physdiff.models.sampling`). `start` in (0, 1] is the fraction of the schedule
    run, from the noised naive start when it is below 1. `mean_snr` > 0 takes the models'
    training mean as x0 at the steps below that SNR (`reverse_diffusion`), before the physics.

    `correction`: "x0" applies Phi to the predicted x0 (the paper); "xt" writes the measured
    lines, clean, into x_{t-1} and keeps the magnitude (ours, a heuristic); "xt_noised" (MRI)
    moves x_{t-1}'s measured lines to the measurement at x_{t-1}'s noise level,
    sqrt(abar) y + sqrt(1 - abar) M F z, and keeps the real part (score-based MRI solvers).

    `adapt` (a dict of `physdiff.recon.adapt.AdaptSettings`; None: off) fits low-rank adapters
    of the models to this measurement during the reverse loop, with a held-out stop chosen by a
    first pass on part of the lines (module `physdiff.recon.adapt`); the models passed in are
    never changed. The result's `adapt` holds the stop, the first pass's held-out log, its
    reconstruction from the kept lines (`kept_volume`) and the held-out line mask (`held`).
    """
    if correction not in CORRECTIONS:
        raise ConfigError(f"recon.dart.correction must be one of {CORRECTIONS}, got {correction!r}")
    if seam not in SEAMS:
        raise ConfigError(f"recon.dart.seam must be one of {SEAMS}, got {seam!r}")
    if n_samples < 1:
        raise ConfigError(f"recon.dart.n_samples must be >= 1, got {n_samples}")
    if not 0.0 < start <= 1.0:
        raise ConfigError(f"recon.dart.start must be in (0, 1], got {start}")
    if correction == "xt_noised" and not hasattr(problem, "noised_consistency"):
        raise ConfigError("recon.dart.correction 'xt_noised' needs a linear measurement of the image (MRI); "
                          f"{type(problem).__name__} has none")
    options = dict(sampler=sampler, steps=steps, eta=eta, correction=correction, n_samples=n_samples, seed=seed,
                   devices=devices, seam=seam, start=start, mean_snr=mean_snr, progress=progress)
    begin = time.perf_counter()
    if adapt is None:
        result = _dart_loop(models, problem, **options)
        result.seconds = time.perf_counter() - begin
        return result
    from physdiff.recon.adapt import AdaptSettings, Fitter, adapted_models

    settings = AdaptSettings.from_dict(adapt)
    if not (hasattr(problem, "split_measurement") and hasattr(problem, "fit_loss")):
        raise ConfigError(f"recon.dart.adapt: {type(problem).__name__} has no held-out split or fit loss")
    # pass 1: fit on the kept lines (4D-STEM: scan positions), watch the held-out ones, choose the stop
    kept, held = problem.split_measurement(settings.holdout, seed=seed)
    watched, params = adapted_models(models, settings, seed)
    first = Fitter(watched, params, kept, settings, seam=seam, devices=devices, plain=models, full=problem, held=held)
    first_pass = _dart_loop(watched, kept, before_step=first, **{**options, "progress": False})
    stop = first.best_stop()
    # pass 2: fit on every line, frozen after `stop` fits
    tuned, params = adapted_models(models, settings, seed)
    second = Fitter(tuned, params, problem, settings, seam=seam, devices=devices, max_fits=stop)
    result = _dart_loop(tuned, problem, before_step=second, **options)
    result.adapt = {"stop": stop, "fits_first_pass": first.fits, "heldout": first.log, "fit": second.log,
                    "kept_volume": first_pass.volume, "held": held}
    result.seconds = time.perf_counter() - begin
    return result


def _dart_loop(models: Sequence[Callable], problem, *, sampler, steps, eta, correction, n_samples, seed, devices,
               seam, start, mean_snr, progress, before_step=None) -> DARTResult:
    """One DART reverse loop (see `dart`); `before_step` is passed to `reverse_diffusion`."""
    transform, log = problem.transform, []
    problem.reset()  # a step size warm-started by an earlier run must not carry over (tune_dart reuses problems)
    diffusion = GaussianDiffusion()
    gen = torch.Generator().manual_seed(int(seed) + 1)  # the noise "xt_noised" puts on the measured lines

    def physics(x_net: torch.Tensor, t: int) -> torch.Tensor:
        # x_net: (B, 1, S, H, W) on the network's scale [-1, 1]
        out = torch.empty_like(x_net)
        for b in range(x_net.shape[0]):
            if correction == "xt_noised":
                z = torch.randn(x_net.shape[2:], generator=gen)
                out[b, 0] = problem.noised_consistency(x_net[b, 0], diffusion.abar(t), z)
            else:
                volume = transform.decode(to_data(x_net[b, 0]))
                out[b, 0] = to_network(transform.encode(problem.data_step(volume)))
            log.append({"t": int(t), "chain": b, **problem.last_info})
        return out

    hook = {"x0_correction" if correction == "x0" else "xt_correction": physics}
    x_init = None
    if start < 1.0:
        naive = torch.as_tensor(np.asarray(problem.naive_start(), np.float32))
        x_init = to_network(transform.encode(naive)).clamp(-1.0, 1.0)
    x = reverse_diffusion(models, (n_samples, *problem.shape), sampler=sampler, steps=steps, eta=eta, seed=seed,
                          devices=devices, progress=progress, seam=seam, start=start, x_init=x_init,
                          mean_snr=mean_snr, before_step=before_step, **hook)
    volume = transform.decode(x).mean(0)  # (S, H, W) in data units
    final = problem.finalize(volume)
    log.append({"t": -1, "chain": -1, **problem.last_info})
    return DARTResult(volume=final, steps=log)
