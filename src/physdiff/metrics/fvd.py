"""Distances between sets of video features for Table 3: FVD, JEDi, bootstrap intervals.

docs/method.md, "Scores".

- FVD: the Fréchet distance between Gaussians fitted to two feature sets,
  ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)).
- JEDi: 100 x the biased MMD^2 with the polynomial kernel k(x, y) = (gamma <x, y> + c0)^2,
  gamma = 1/dim, c0 = 0 (as in the JEDi paper, on V-JEPA features; here on whatever features
  are given, and the table says which).

Every score is reported with the number of real and generated volumes it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from physdiff.errors import ConfigError, InputError


def _features(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise InputError(f"{name}: expected (N >= 2, D) features, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError(f"{name}: features hold NaN or inf values")
    return x


def frechet_distance(real, gen) -> float:
    """Fréchet distance between Gaussians fitted to (N, D) real and (M, D) generated features.

    FD = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr (S1 S2)^(1/2), with the (ddof = 1) sample
    covariances S1 = A A^T and S2 = B B^T, A = (X1 - mu1)^T / sqrt(N - 1) (D x N) and B likewise.
    The non-zero eigenvalues of S1 S2 are those of (A^T B)(A^T B)^T, so tr (S1 S2)^(1/2) is the sum
    of the singular values of the N x M matrix A^T B: exact for any N and D, with no D x D
    matrix square root. With N < D (Table 3's few volumes against 400 I3D logits) the
    covariances are singular; `scipy.linalg.sqrtm` of their product took seconds per call and
    needed a regulariser, while this takes milliseconds and agrees with it where sqrtm is
    accurate (tests/test_fvd.py).
    """
    real, gen = _features(real, "real features"), _features(gen, "generated features")
    if real.shape[1] != gen.shape[1]:
        raise InputError(f"feature dimensions differ: real {real.shape[1]}, generated {gen.shape[1]}")
    mu1, mu2 = real.mean(0), gen.mean(0)
    a = (real - mu1) / np.sqrt(len(real) - 1)
    b = (gen - mu2) / np.sqrt(len(gen) - 1)
    tr_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.sum(a * a) + np.sum(b * b) - 2.0 * tr_sqrt)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 2, coef0: float = 0.0) -> np.ndarray:
    """k(x, y) = (<x, y> / dim + coef0)^degree, the kernel of JEDi's MMD."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def jedi(real, gen) -> float:
    """JEDi: 100 x biased MMD^2 (polynomial kernel, degree 2, gamma = 1/dim, c0 = 0)."""
    real, gen = _features(real, "real features"), _features(gen, "generated features")
    if real.shape[1] != gen.shape[1]:
        raise InputError(f"feature dimensions differ: real {real.shape[1]}, generated {gen.shape[1]}")
    # biased: the diagonal k(x_i, x_i) stays in the within-set means
    mmd2 = (
        polynomial_kernel(real, real).mean()
        + polynomial_kernel(gen, gen).mean()
        - 2.0 * polynomial_kernel(real, gen).mean()
    )
    return float(100.0 * mmd2)


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    real,
    gen,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    bias_correct: bool = True,
) -> tuple[float, float]:
    """Bootstrap interval of metric_fn(real, gen), resampling both sets with replacement.

    Resampling with replacement duplicates samples, and duplicates inflate plug-in FD and
    biased MMD (fewer distinct points, heavier k(x, x) terms): measured on Gaussian features the
    whole percentile interval sat above the estimate even at N = 200. With `bias_correct` the
    percentiles are shifted by the bootstrap's bias estimate, mean(boot) - metric(real, gen), so
    the interval describes the spread around the estimate; without it, plain percentiles.
    """
    real, gen = np.asarray(real), np.asarray(gen)
    if n_boot < 2:
        raise ConfigError(f"bootstrap_ci: n_boot must be at least 2, got {n_boot}")
    rng = np.random.default_rng(seed)
    stats = np.array([
        metric_fn(real[rng.integers(0, len(real), len(real))], gen[rng.integers(0, len(gen), len(gen))])
        for _ in range(n_boot)
    ])
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(stats, [tail, 100.0 - tail])
    bias = stats.mean() - metric_fn(real, gen) if bias_correct else 0.0
    return float(lo - bias), float(hi - bias)


@dataclass(frozen=True)
class Score:
    """A metric value with its bootstrap interval and the set sizes it came from."""

    value: float
    lo: float
    hi: float
    n_real: int
    n_gen: int

    def __str__(self) -> str:
        return f"{self.value:.2f} [{self.lo:.2f}, {self.hi:.2f}] (N={self.n_gen} vs {self.n_real})"


def score(metric_fn, real, gen, n_boot: int = 200, seed: int = 0) -> Score:
    """metric_fn(real, gen) with its 95 % bias-corrected bootstrap interval and both N."""
    lo, hi = bootstrap_ci(metric_fn, real, gen, n_boot, seed)
    return Score(metric_fn(real, gen), lo, hi, len(real), len(gen))


FEATURE_KEYS = {"i3d": "i3d_checkpoint", "videomae": "videomae_checkpoint", "vjepa": "vjepa_checkpoint"}


def not_configured(key: str) -> str:
    """The table's entry for a metric whose feature network has no checkpoint in the config."""
    return f"not configured (set metrics.{key})"


def feature_extractor_from_config(cfg: dict, name: str, *, default_i3d=None, device=None):
    """A function (N, S, H, W) volumes in [0, 1] -> (N, D) features, or a 'not configured' string.

    - "i3d": the Kinetics-400 I3D of physdiff.metrics.i3d, loaded from `metrics.i3d_checkpoint`
      or else from `default_i3d` (the pipeline's fetched copy); features are the 400-d logits.
    - "videomae", "vjepa": a TorchScript file at `metrics.videomae_checkpoint` /
      `metrics.vjepa_checkpoint`, loaded with `torch.jit.load` (or, for a `.pt2` path, a
      `torch.export` program, loaded with `torch.export.load`; export it with a dynamic batch
      dimension, as the last batch may be smaller). We ship no VideoMAE or V-JEPA
      network: the user exports one (with its own input normalisation) that maps clips of
      (B, 3, T, 224, 224) in [-1, 1], prepared as for I3D, to (B, D) features.
    Without a path the result is the string "not configured (set metrics.<key>)", never a number.
    """
    import torch

    from physdiff.metrics import i3d

    if name not in FEATURE_KEYS:
        raise ConfigError(f"unknown feature network {name!r}; expected one of {sorted(FEATURE_KEYS)}")
    key = FEATURE_KEYS[name]
    path = (cfg.get("metrics") or {}).get(key) or (default_i3d if name == "i3d" else None)
    if not path:
        return not_configured(key)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"metrics.{key}: {path} does not exist")
    batch = int((cfg.get("metrics") or {}).get("batch_size", 8))
    if name == "i3d":
        model = i3d.load_i3d(path, device)
        return lambda volumes: i3d.i3d_features(model, volumes, batch, name=str(path))
    try:  # torch.jit is deprecated in favour of torch.export, so both archive kinds are read
        if path.suffix == ".pt2":
            net = torch.export.load(str(path)).module().to(device or "cpu")
        else:
            net = torch.jit.load(str(path), map_location=device or "cpu").eval()
    except Exception as err:  # neither a TorchScript nor an exported-program archive
        raise InputError(f"metrics.{key}: {path} is not a TorchScript/.pt2 file ({err})") from err

    dev = torch.device(device or "cpu")

    @torch.no_grad()
    def extract(volumes):
        volumes = np.asarray(volumes)
        out = [
            net(i3d.prepare_clips(volumes[i : i + batch]).to(dev)).double().cpu().numpy()
            for i in range(0, len(volumes), batch)
        ]
        return np.concatenate(out)

    return extract
