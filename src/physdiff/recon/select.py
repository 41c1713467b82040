"""DART, self-validated (ours): per scan, a check that needs no ground truth chooses between plain
DART, adapted DART and CS.

Each candidate method also reconstructs the scan from its measured lines less a seeded fraction
of those outside the centre band (the same split for every method: `MRIProblem.split_lines`
with the volume's seed), and is scored by how well that reconstruction predicts the lines it
was not given. The method with the lowest held-out error is chosen, and its reconstruction from
all lines is the result.

Two held-out errors (`HELDOUT_WEIGHTINGS`):
- "plain": ||M_h (F x - y)||^2 / ||M_h y||^2. The held-out lines follow the mask's own density,
  so on a variable-density mask this weighs the low frequencies that every method gets right.
- "density": each held-out line weighted by the inverse of the mask's sampling density there
  (estimated from the mask: the fraction of slices that sample the line, smoothed over
  neighbouring lines), so the sum estimates the error over all of k-space, the unmeasured lines
  included, as an importance-weighted average does. Image metrics judge all of k-space.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from physdiff.errors import ConfigError, InputError
from physdiff.physics.mri import fft2c

CANDIDATES = ("dart", "dart_adapt", "cs_l1_wavelet")
HELDOUT_WEIGHTINGS = ("plain", "density")


def line_density(mask: np.ndarray, *, smooth: float = 2.0) -> np.ndarray:
    """Estimated probability that each phase-encode line is sampled (W,): the fraction of slices
    (or of the one mask) sampling it, smoothed with a Gaussian of `smooth` lines, floored at 1/W."""
    mask = np.asarray(mask, bool)
    lines = mask.reshape(-1, *mask.shape[-2:]).any(axis=1).mean(axis=0)
    density = gaussian_filter1d(lines.astype(float), smooth, mode="nearest") if smooth > 0 else lines.astype(float)
    return np.clip(density, 1.0 / lines.size, 1.0)


def heldout_error(x: np.ndarray, y: np.ndarray, held: np.ndarray, *, weighting: str = "plain",
                  mask: np.ndarray | None = None) -> float:
    """Relative error of x (S, H, W) on the held-out lines `held` of the measurement y; with
    weighting "density", each line weighted by 1 / line_density(mask)."""
    if weighting not in HELDOUT_WEIGHTINGS:
        raise ConfigError(f"held-out weighting must be one of {HELDOUT_WEIGHTINGS}, got {weighting!r}")
    x, held = np.asarray(x, np.float32), np.broadcast_to(np.asarray(held, bool), np.shape(y))
    if x.shape != np.shape(y):
        raise InputError(f"held-out check: reconstruction {x.shape} does not match the measurement {np.shape(y)}")
    w = np.ones(x.shape[-1])
    if weighting == "density":
        if mask is None:
            raise ConfigError("held-out weighting 'density' needs the mask")
        w = 1.0 / line_density(mask)
    err = (np.abs(fft2c(x) - y) ** 2 * held * w).sum()
    ref = (np.abs(y) ** 2 * held * w).sum()
    if not ref > 0:
        raise InputError("held-out check: the held-out lines hold no signal")
    return float(err / ref)


def heldout_errors(recons: dict[str, np.ndarray], y: np.ndarray, held: np.ndarray,
                   mask: np.ndarray) -> dict[str, dict[str, float]]:
    """{weighting: {name: held-out error}} of reconstructions made without the `held` lines."""
    return {w: {name: heldout_error(x, y, held, weighting=w, mask=mask) for name, x in recons.items()}
            for w in HELDOUT_WEIGHTINGS}


def choose(errors: dict[str, float]) -> str:
    """The method with the lowest held-out error (ties: the first in CANDIDATES order)."""
    if not errors:
        raise InputError("held-out check: no candidate method")
    order = [m for m in CANDIDATES if m in errors] + [m for m in errors if m not in CANDIDATES]
    return min(order, key=lambda m: (not np.isfinite(errors[m]), errors[m]))
