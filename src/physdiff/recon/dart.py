"""DART: Diffusion-Alternating Multi-slice Reconstruction (SPEC 4).

At every reverse step the G partition models predict their slabs, the stacked x0 goes through
the physics step Phi of the problem (MRI: Eq. 4; 4D-STEM: k steps of Eq. 5), and the DDPM or
DDIM update moves toward the corrected x0. After the last step Phi is applied once more, so
the returned volume is the physics step's own output, never clipped afterwards.

`start` < 1 (ours) enters the reverse loop part-way, from the problem's naive start (the
zero-filled image; V = 0) noised to that step, as Chung et al. 2022 ("Come-Closer-Diffuse-Faster")
do: the prior then refines what the measurement already shows instead of drawing from pure noise,
in start x `steps` model evaluations. start = 1 is the paper's full loop.

`correction="xt"` applies Phi to x_{t-1} instead (as score-based MRI solvers do). Phi works in
data units: the prior's volumes are mapped with the problem's stored transform on the way in
and out, inside the hook.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from physdiff.errors import ConfigError
from physdiff.models.diffusion import to_data, to_network
from physdiff.models.sampling import SEAMS, reverse_diffusion


@dataclass
class DARTResult:
    """The reconstruction (S, H, W) in data units, one log row per physics step, and timings."""

    volume: np.ndarray
    steps: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def dart(models: Sequence[Callable], problem, *, sampler: str = "ddim", steps: int = 50, eta: float = 1.0,
         correction: str = "x0", n_samples: int = 1, seed: int = 0, devices: Sequence | None = None,
         seam: str = "none", start: float = 1.0, mean_snr: float = 0.0, progress: bool = True) -> DARTResult:
    """Reconstruct one measurement with DART; `models[g]` is partition g's eps network.

    `n_samples` > 1 runs that many chains side by side and averages them in data units before
    the final physics step. The noise is seeded by `seed`. `seam` is the partitioned sampler's
    seam handling ("none": plain stacking; "overlap" or "plateau": eps blended across partition
    boundaries, `physdiff.models.sampling`). `start` in (0, 1] is the fraction of the schedule
    run, from the noised naive start when it is below 1. `mean_snr` > 0 takes the models'
    training mean as x0 at the steps below that SNR (`reverse_diffusion`), before the physics.
    """
    if correction not in ("x0", "xt"):
        raise ConfigError(f"recon.dart.correction must be 'x0' or 'xt', got {correction!r}")
    if seam not in SEAMS:
        raise ConfigError(f"recon.dart.seam must be one of {SEAMS}, got {seam!r}")
    if n_samples < 1:
        raise ConfigError(f"recon.dart.n_samples must be >= 1, got {n_samples}")
    if not 0.0 < start <= 1.0:
        raise ConfigError(f"recon.dart.start must be in (0, 1], got {start}")
    transform, log = problem.transform, []
    problem.reset()  # a step size warm-started by an earlier run must not carry over (tune_dart reuses problems)

    def physics(x_net: torch.Tensor, t: int) -> torch.Tensor:
        # x_net: (B, 1, S, H, W) on the network's scale [-1, 1]
        out = torch.empty_like(x_net)
        for b in range(x_net.shape[0]):
            volume = transform.decode(to_data(x_net[b, 0]))
            corrected = problem.data_step(volume)
            log.append({"t": int(t), "chain": b, **problem.last_info})
            out[b, 0] = to_network(transform.encode(corrected))
        return out

    hook = {"x0_correction" if correction == "x0" else "xt_correction": physics}
    begin = time.perf_counter()
    x_init = None
    if start < 1.0:
        naive = torch.as_tensor(np.asarray(problem.naive_start(), np.float32))
        x_init = to_network(transform.encode(naive)).clamp(-1.0, 1.0)
    x = reverse_diffusion(models, (n_samples, *problem.shape), sampler=sampler, steps=steps, eta=eta, seed=seed,
                          devices=devices, progress=progress, seam=seam, start=start, x_init=x_init,
                          mean_snr=mean_snr, **hook)
    volume = transform.decode(x).mean(0)  # (S, H, W) in data units
    final = problem.finalize(volume)
    log.append({"t": -1, "chain": -1, **problem.last_info})
    return DARTResult(volume=final, steps=log, seconds=time.perf_counter() - begin)
