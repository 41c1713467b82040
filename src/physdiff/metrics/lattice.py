"""How crystalline a potential looks: the share of its projection's power in a few Fourier peaks.

A periodic lattice of atomic columns puts the power of its projected potential (the sum over
slices, mean removed) into Bragg peaks, a handful of Fourier bins; scattered spots spread it
over many. `bragg_power_share` is the power in the strongest `top_fraction` of the bins over
the total: about 1 for a lattice (the validation potentials here: 0.97-0.99), and
about `top_fraction` times a few for white noise. It needs no atom positions, so it scores
generated volumes as well as real ones.
"""

from __future__ import annotations

import numpy as np

from physdiff.errors import InputError


def bragg_power_share(volumes: np.ndarray, top_fraction: float = 0.01) -> np.ndarray:
    """Per volume (N, S, H, W) -> (N,): the power of the projection in its strongest bins over all of it."""
    volumes = np.asarray(volumes, dtype=np.float64)
    if volumes.ndim != 4:
        raise InputError(f"volumes must be (N, S, H, W), got shape {volumes.shape}")
    if not 0 < top_fraction <= 1:
        raise InputError(f"top_fraction must be in (0, 1], got {top_fraction}")
    projection = volumes.sum(axis=1)
    projection = projection - projection.mean(axis=(1, 2), keepdims=True)
    power = np.sort((np.abs(np.fft.fft2(projection)) ** 2).reshape(len(volumes), -1), axis=1)
    k = max(1, int(round(top_fraction * power.shape[1])))
    total = power.sum(axis=1)
    return np.divide(power[:, -k:].sum(axis=1), total, out=np.full(len(volumes), np.nan), where=total > 0)
