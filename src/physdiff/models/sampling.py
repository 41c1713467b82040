"""Partitioned reverse diffusion: G slab models denoise one volume together.

docs/method.md, "The prior", "Seams (ours)" and "DART".

At each reverse step every partition model g predicts eps for its slab of x_t, the slabs'
x0 predictions are stacked into the full volume, an optional correction (DART's physics step)
acts on that whole volume, and the DDPM or DDIM step moves x_t toward the corrected x0.

Seams: with `seam="overlap"` or `"plateau"`, model g also denoises a window of its own slab
length centred on the boundary between slabs g and g+1, and eps there is a blend that leans on
the window near the boundary, so the slices on either side are predicted from one view of both.
"overlap" weighs the window with a triangle (7/8 at the two boundary slices of a slab of 8, so
1/8 of each slab's own, disagreeing prediction remains there); "plateau" with a trapezoid that is
1 over the window's middle half and ramps to 0 over its outer quarters, so the boundary slices
come from the window alone. Each model still sees only slab-length inputs and holds only its
own weights. `seam="none"` is plain stacking.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from physdiff.errors import ConfigError, InputError
from physdiff.models.diffusion import GaussianDiffusion, to_data, to_network

Correction = Callable[[torch.Tensor, int], torch.Tensor]
SEAMS = ("none", "overlap", "plateau")


def partition_bounds(num_slices: int, partitions: int) -> list[tuple[int, int]]:
    """Slice ranges of the G partitions: slab g = slices [g S // G, (g + 1) S // G)."""
    if not 1 <= partitions <= num_slices:
        raise ConfigError(f"partitions must be in [1, S={num_slices}], got {partitions}")
    return [(g * num_slices // partitions, (g + 1) * num_slices // partitions) for g in range(partitions)]


def partition_devices(count: int, devices: Sequence | None = None) -> list[torch.device]:
    """One device per partition: CUDA round robin where available, else all on the CPU."""
    if devices is None:
        n_gpu = torch.cuda.device_count()
        devices = [f"cuda:{g % n_gpu}" for g in range(count)] if n_gpu else ["cpu"] * count
    if len(devices) != count:
        raise ConfigError(f"need one device per partition model ({count}), got {len(devices)}: {list(devices)}")
    return [torch.device(d) for d in devices]


def seam_windows(bounds: Sequence[tuple[int, int]], shape: str = "overlap") -> list[tuple[int, int, int, torch.Tensor]]:
    """(model g, start, end, blend weights (end - start,)) of a window across each slab boundary.

    The window has the shorter neighbouring slab's length. Its weight at slice centre c, a
    distance |c - b| from the boundary b in a window of length L: "overlap", a triangle
    1 - |c - b| / (L / 2); "plateau", a trapezoid clip((L / 2 - |c - b|) / (L / 4), 0, 1).
    """
    if shape not in ("overlap", "plateau"):
        raise ConfigError(f"seam window shape must be 'overlap' or 'plateau', got {shape!r}")
    out = []
    for g in range(len(bounds) - 1):
        b = bounds[g][1]
        length = min(bounds[g][1] - bounds[g][0], bounds[g + 1][1] - bounds[g + 1][0])
        if length < 2:
            continue
        start = b - length // 2
        distance = (torch.arange(start, start + length, dtype=torch.float32) + 0.5 - b).abs()  # of slice centres
        if shape == "overlap":
            w = (1 - distance / (length / 2)).clamp_min(0.0)
        else:
            w = ((length / 2 - distance) / (length / 4)).clamp(0.0, 1.0)
        out.append((g, start, start + length, w))
    return out


def partition_eps(models: Sequence[Callable], devs: Sequence[torch.device], bounds, x: torch.Tensor, t: int,
                  seam: str = "none") -> torch.Tensor:
    """eps for the full stack x (B, 1, S, H, W): each slab by its model, blended across seams."""
    b, home = x.shape[0], x.device
    step = lambda dev: torch.full((b,), t, device=dev, dtype=torch.long)
    # Launch every partition before gathering, so CUDA devices work side by side.
    eps = [model(x[:, :, a:e].to(dev), step(dev)) for model, dev, (a, e) in zip(models, devs, bounds)]
    windows = seam_windows(bounds, seam) if seam != "none" else []
    win_eps = [models[g](x[:, :, a:e].to(devs[g]), step(devs[g])) for g, a, e, _ in windows]
    eps = torch.cat([e.to(home, torch.float32) for e in eps], dim=2)
    if not windows:
        return eps
    num, wsum = torch.zeros_like(eps), torch.zeros(eps.shape[2], device=home)
    for (_, a, e, w), we in zip(windows, win_eps):
        w = w.to(home)
        num[:, :, a:e] += w[:, None, None] * we.to(home, torch.float32)
        wsum[a:e] += w
    base = (1 - wsum).clamp_min(0.0)
    return (base[:, None, None] * eps + num) / (base + wsum)[:, None, None]


def stacked_data_mean(models: Sequence[Callable], bounds: Sequence[tuple[int, int]],
                      size: tuple[int, int]) -> torch.Tensor:
    """The partition models' training means (`model.data_mean`, set by `load_model`) stacked
    into one volume (1, 1, S, H, W) in [0, 1]; an InputError if a model lacks one or it does not
    fit its slab."""
    slabs = []
    for g, (model, (lo, hi)) in enumerate(zip(models, bounds)):
        mean = getattr(model, "data_mean", None)
        if mean is None:
            raise InputError(f"partition model {g} carries no training mean (model files written before "
                             f"it was stored lack it): retrain it, or set mean_snr to 0")
        mean = torch.as_tensor(mean, dtype=torch.float32)
        if tuple(mean.shape) != (hi - lo, *size):
            raise InputError(f"partition model {g}'s training mean has shape {tuple(mean.shape)}, its slab "
                             f"needs {(hi - lo, *size)}")
        slabs.append(mean)
    return torch.cat(slabs)[None, None]


def reverse_diffusion(models: Sequence[Callable], shape: tuple[int, int, int, int], *, sampler: str = "ddim",
                      steps: int | None = 50, eta: float = 1.0, seed: int = 0,
                      x0_correction: Correction | None = None, xt_correction: Correction | None = None,
                      diffusion: GaussianDiffusion | None = None, devices: Sequence | None = None,
                      progress: bool = True, seam: str = "none", start: float = 1.0,
                      x_init: torch.Tensor | None = None, mean_snr: float = 0.0,
                      before_step: Callable[[torch.Tensor, int], torch.Tensor | None] | None = None) -> torch.Tensor:
    """Sample B volumes of shape (S, H, W) with G partition models; returns (B, S, H, W) in [0, 1].

    `models[g]` maps (x_t slab (B, 1, S_g, H, W), t (B,)) to eps; `shape` = (B, S, H, W).
    Hooks see network-scale volumes ([-1, 1], (B, 1, S, H, W)) and the step index t (0..T-1):
    `x0_correction(x0, t)` after the slabs' x0 are stacked (before clamping to [-1, 1]),
    `xt_correction(x_prev, t_prev)` on x_{t-1} (not after the last step). `sampler` "ddpm" is
    the ancestral Eq. (1) (respaced when steps < T); "ddim" takes eta. Noise comes from one
    CPU torch.Generator seeded by `seed`, so results repeat exactly for a seed. `seam` is "none"
    (stacked slabs), "overlap" or "plateau" (eps blended with windows across the boundaries,
    G - 1 more slab forwards per step; see the module docstring); the hooks see the full
    stacked volume either way.

    `start` < 1 (ours; Chung et al. 2022, "Come-Closer-Diffuse-Faster") enters the reverse loop
    part-way: only the steps of the `steps` schedule below start * T are taken, from
    x_t0 = sqrt(abar_t0) x_init + sqrt(1 - abar_t0) z, where `x_init` ((S, H, W) or
    (B, S, H, W), network scale [-1, 1]) is a first guess such as the zero-filled image. The
    guess's coarse content survives the noise, so the prior refines it instead of drawing a
    volume from scratch; start = 1 is the full loop from pure noise (x_init is not used).

    `mean_snr` > 0 (ours): at the steps whose SNR_t = abar_t / (1 - abar_t) is below it, x0 is
    the partition models' training mean (`stacked_data_mean`) instead of the network's estimate
    (before the hooks, so DART's physics still corrects it), and the networks are not run. There the noise hides the data:
    the best x0 is the data mean, while an eps network's x0 = (x_t - sqrt(1 - abar_t) eps) /
    sqrt(abar_t) is its eps error magnified 2e4 times at t = T, which the clamp to
    [-1, 1] turns into a random grey offset per volume.

    `before_step(x_t, t)` runs before the networks at each step where they run (DART's per-scan
    adaptation, `physdiff.recon.adapt`, updates the models there); where it returns eps of x_t,
    the step uses that instead of running the networks again.
    """
    if sampler not in ("ddim", "ddpm"):
        raise ConfigError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    if seam not in SEAMS:
        raise ConfigError(f"prior.sampling.seam must be one of {SEAMS}, got {seam!r}")
    diffusion = diffusion or GaussianDiffusion()
    ts = diffusion.schedule(steps, start=start)  # checks steps and start
    if start < 1.0 and x_init is None:
        raise ConfigError("start < 1 needs x_init, the guess the reverse loop starts from")
    if not mean_snr >= 0.0:
        raise ConfigError(f"mean_snr must be >= 0, got {mean_snr}")
    b, s, h, w = shape
    bounds = partition_bounds(s, len(models))
    devs = partition_devices(len(models), devices)
    for model, dev in zip(models, devs):
        if isinstance(model, nn.Module):
            model.to(dev).eval()
    home = devs[0]
    mean_x0, mean_steps = None, set()
    if mean_snr > 0:
        mean_x0 = to_network(stacked_data_mean(models, bounds, (h, w))).to(home)
        mean_steps = {t for t, snr in zip(ts, diffusion.snr(torch.tensor(ts)).tolist()) if snr < mean_snr}
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = lambda: torch.randn((b, 1, s, h, w), generator=gen).to(home)
    x = noise()
    if start < 1.0:
        guess = torch.as_tensor(x_init, dtype=x.dtype).to(home).reshape(-1, 1, s, h, w).expand(b, 1, s, h, w)
        a0 = diffusion.abar(ts[0])
        x = math.sqrt(a0) * guess + math.sqrt(1.0 - a0) * x
    for i, t in enumerate(tqdm(ts, desc=f"{sampler} sampling", disable=not progress, leave=False)):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        eps = None
        if before_step is not None and t not in mean_steps:
            eps = before_step(x, t)  # DART's per-scan adaptation fits the models to the measurement here
        if t in mean_steps:
            x0 = mean_x0.expand(b, 1, s, h, w).clone()  # the networks' estimate is not needed here
        else:
            with torch.no_grad():
                if eps is None:
                    eps = partition_eps(models, devs, bounds, x, t, seam)
                x0 = diffusion.predict_x0(x, t, eps.detach())
        # Hooks run outside no_grad: a physics step may differentiate its own loss.
        if x0_correction is not None:
            x0 = x0_correction(x0, t).detach()
        x0 = x0.clamp(-1.0, 1.0)
        z = noise() if t_prev >= 0 else None
        if sampler == "ddpm":
            x = diffusion.ddpm_step(x, x0, t, t_prev, z)
        else:
            x = diffusion.ddim_step(x, x0, t, t_prev, eta=eta, noise=z)
        if xt_correction is not None and t_prev >= 0:
            x = xt_correction(x, t_prev).detach()
    return to_data(x).clamp(0.0, 1.0)[:, 0].cpu()


def sample_volumes(models: Sequence[Callable], n: int, shape: tuple[int, int, int], *, batch_size: int = 4,
                   seed: int = 0, progress: bool = True, **kwargs) -> np.ndarray:
    """Draw n unconditional volumes (S, H, W) in batches; returns float32 (n, S, H, W) in [0, 1].

    Batch k is seeded with seed + k; other keywords go to `reverse_diffusion`.
    """
    out = []
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    for k, nb in enumerate(tqdm(sizes, desc="volumes", disable=not progress)):
        vol = reverse_diffusion(models, (nb, *shape), seed=seed + k, progress=False, **kwargs)
        out.append(vol.numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, *shape), np.float32)
