"""Small synthetic test volumes with a known ground truth."""

from __future__ import annotations

import numpy as np


def blob_volume(n_slices: int = 3, size: int = 64, *, n_blobs: int = 12, seed: int = 0) -> np.ndarray:
    """Smooth Gaussian blobs drifting from slice to slice, in [0, 1], on an empty background: (S, size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    centres = rng.uniform(-0.25, 0.25, (n_blobs, 2))
    radii, amps, drift = rng.uniform(0.03, 0.1, n_blobs), rng.uniform(0.3, 1, n_blobs), rng.normal(0, 0.01, (n_blobs, 2))
    v = np.stack([sum(a * np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * r**2))
                      for a, c, r in zip(amps, centres + s * drift, radii)) for s in range(n_slices)])
    return (v / v.max()).astype(np.float32)
