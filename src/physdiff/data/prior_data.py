"""Training and validation volumes for the diffusion prior, as (N, S, H, W) float32 in [0, 1].

MRI volumes are already in [0, 1]. Crystal potentials (V·Å, non-negative) are mapped to [0, 1]
by a `PowerTransform`: divided by the largest value in the training set, then raised to a power
gamma < 1 that lifts the many near-zero voxels between atoms off the bottom of the range. The
transform is saved beside the arrays so generated volumes can be mapped back to V·Å.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from physdiff.data.stem_sim import load_sample
from physdiff.data.transforms import PowerTransform
from physdiff.errors import ConfigError, InputError

log = logging.getLogger(__name__)
GAMMA_RANGE = (0.05, 1.0)


def load_potentials(paths: Sequence[str | Path], *, split: str = "training", progress: bool = True) -> np.ndarray:
    """Stack the potentials (V·Å) of 4D-STEM samples into (N, S, H, W) float32."""
    if not paths:
        raise InputError(f"no 4D-STEM {split} samples to build the prior's data from")
    volumes, shape = [], None
    for path in tqdm(paths, desc=f"{split} potentials", unit="sample", disable=not progress):
        potential = np.asarray(load_sample(path)["potential"], np.float32)
        if shape is not None and potential.shape != shape:
            raise InputError(f"{path}: potential shape {potential.shape} differs from {shape}; "
                             f"every {split} sample needs the same (S, H, W) (stem.simulation.gpts, n_slices)")
        shape = potential.shape
        volumes.append(potential)
    return np.stack(volumes)


def choose_gamma(potentials: np.ndarray, scale: float, *, target_mean: float = 0.25) -> float:
    """The gamma in [0.05, 1] whose encoded potentials have mean `target_mean` (bisection).

    mean((V / scale) ** gamma) falls monotonically as gamma grows, so the root is unique; where
    gamma = 1 already reaches the target, no lift is needed and 1 is returned.
    """
    u = np.clip(np.asarray(potentials, np.float64) / scale, 0.0, 1.0).ravel()
    mean = lambda g: float(np.mean(u**g))
    lo, hi = GAMMA_RANGE
    if mean(hi) >= target_mean:
        return hi
    if mean(lo) <= target_mean:
        return lo
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean(mid) > target_mean else (lo, mid)
    return round(0.5 * (lo + hi), 4)


def stem_transform(train: np.ndarray, val: np.ndarray | None, gamma: float | str = "auto", *,
                   target_mean: float = 0.25) -> PowerTransform:
    """PowerTransform with scale = the training maximum (V·Å) and gamma fixed or chosen on `val`."""
    scale = float(np.max(train))
    if scale <= 0:
        raise InputError("every training potential is zero or negative; expected projected potentials in V·Å")
    if gamma == "auto":
        if val is None or not len(val):
            raise ConfigError("prior.stem_transform.gamma: 'auto' chooses gamma on the validation split, which is empty")
        gamma = choose_gamma(val, scale, target_mean=target_mean)
    elif isinstance(gamma, str) or not 0 < float(gamma) <= 1:
        raise ConfigError(f"prior.stem_transform.gamma must be 'auto' or a number in (0, 1], got {gamma!r}")
    return PowerTransform(scale, float(gamma))


def encode_potentials(potentials: np.ndarray, transform: PowerTransform) -> np.ndarray:
    """Encode potentials to [0, 1] float32, logging the band-limit ringing that is clipped."""
    # abTEM band-limits the potential, which leaves slight negative ringing between atoms
    # (about -1 V·Å against peaks of hundreds); the prior works on [0, 1], so it is clipped.
    if potentials.min() < 0:
        log.info("clipping negative band-limit ringing (min %.3g V·Å, %.2g of the scale) to 0",
                 potentials.min(), -potentials.min() / transform.scale)
    return np.asarray(transform.encode(potentials), np.float32)


def stem_prior_volumes(paths: Sequence[str | Path], *, progress: bool = True) -> tuple[np.ndarray, float]:
    """Stack the potentials of 4D-STEM samples and scale them to [0, 1] (gamma = 1); returns (array, scale in V·Å)."""
    train = load_potentials(paths, progress=progress)
    transform = stem_transform(train, None, 1.0)
    return encode_potentials(train, transform), transform.scale
