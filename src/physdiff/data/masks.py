"""Cartesian k-space undersampling masks (docs/method.md, "MRI"): uniform, gaussian and random lines.

Convention:
- the phase-encode axis is the LAST axis (W, columns); a sampled phase-encode line is a whole
  column `mask[..., :, k] = True` (read-out along H is always fully sampled), as in fastMRI;
- k-space is centred (k = 0 at index W // 2), matching `np.fft.fftshift` of an unshifted FFT;
- every mask has a fully sampled centre band of `round(center_fraction * W)` lines around k = 0.

Kinds:
Every kind samples round(W / R) lines in all, the centre band counting towards them, as
fastMRI's mask functions do, so the same R means the same line count for every kind:
- `uniform`: the lines outside the centre band lie on an equispaced comb through k = 0
  (spacing chosen so that the comb adds exactly the missing lines);
- `gaussian`: the lines outside the band are drawn without replacement with density
  `exp(-k^2 / (2 (std_fraction W)^2))`;
- `random`: as gaussian but with a flat density.
"""

from __future__ import annotations

import numpy as np

from physdiff.errors import ConfigError, InputError

MASK_KINDS = ("uniform", "gaussian", "random")
PHASE_ENCODE_AXIS = -1


def center_band(n_lines: int, center_fraction: float) -> np.ndarray:
    """Indices of the round(center_fraction * n_lines) fully sampled lines around k = 0 (index n_lines // 2)."""
    n_center = int(round(center_fraction * n_lines))
    start = n_lines // 2 - n_center // 2
    return np.arange(start, start + n_center)


def _line_pattern(
    kind: str, n_lines: int, acceleration: float, center_fraction: float,
    rng: np.random.Generator, std_fraction: float, phase: float,
) -> np.ndarray:
    """One boolean vector over the phase-encode lines."""
    lines = np.zeros(n_lines, dtype=bool)
    centre = center_band(n_lines, center_fraction)
    lines[centre] = True
    k = np.arange(n_lines) - n_lines // 2
    n_extra = int(round(n_lines / acceleration)) - int(lines.sum())
    if n_extra <= 0:
        return lines
    candidates = np.flatnonzero(~lines)
    if kind == "uniform":
        # As fastMRI's equispaced mask, the comb's spacing is adjusted (non-integer) so that it
        # adds exactly the lines the band leaves to reach round(W / R); the comb runs over the
        # lines outside the band, and `phase` in [0, 1) shifts it by a fraction of its spacing.
        spacing = len(candidates) / n_extra
        picks = np.floor((np.arange(n_extra) + phase) * spacing).astype(int)
        lines[candidates[picks]] = True
        return lines
    if kind == "gaussian":
        weight = np.exp(-0.5 * (k[candidates] / (std_fraction * n_lines)) ** 2)
    else:
        weight = np.ones(len(candidates))
    chosen = rng.choice(candidates, size=min(n_extra, len(candidates)), replace=False, p=weight / weight.sum())
    lines[chosen] = True
    return lines


def make_mask(
    kind: str,
    *,
    shape: tuple[int, int],
    acceleration: float,
    center_fraction: float,
    seed: int,
    n_slices: int | None = None,
    std_fraction: float = 0.25,
) -> np.ndarray:
    """Boolean k-space mask, (H, W) shared by all slices or (n_slices, H, W) drawn per slice.

    `acceleration` R >= 1 is the target ratio W / (sampled lines); `std_fraction` is the gaussian
    density's standard deviation as a fraction of W. Per-slice uniform masks shift the comb by a
    seeded fraction of its spacing for each slice, so neighbouring slices sample interleaved lines.
    """
    if kind not in MASK_KINDS:
        raise ConfigError(f"mask kind '{kind}' is unknown; expected one of {MASK_KINDS}")
    if not np.isfinite(acceleration) or acceleration < 1:
        raise ConfigError(f"mask acceleration must be a number >= 1, got {acceleration}")
    if not 0.0 <= center_fraction < 1.0:
        raise ConfigError(f"mask center_fraction must lie in [0, 1), got {center_fraction}")
    if len(shape) != 2 or min(shape) < 1:
        raise ConfigError(f"mask shape must be (H, W) with positive sizes, got {shape}")
    if n_slices is not None and int(n_slices) < 1:
        raise ConfigError(f"mask n_slices must be None or >= 1, got {n_slices}")
    if std_fraction <= 0:
        raise ConfigError(f"mask std_fraction must be > 0, got {std_fraction}")
    height, width = int(shape[0]), int(shape[1])
    rng = np.random.default_rng(seed)
    if n_slices is None:
        lines = _line_pattern(kind, width, acceleration, center_fraction, rng, std_fraction, 0.5)
        return np.broadcast_to(lines, (height, width)).copy()
    stack = np.empty((int(n_slices), height, width), dtype=bool)
    for s in range(int(n_slices)):
        phase = float(rng.random()) if kind == "uniform" else 0.5
        stack[s] = _line_pattern(kind, width, acceleration, center_fraction, rng, std_fraction, phase)
    return stack


def holdout_lines(mask: np.ndarray, fraction: float, *, center_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a line mask into (kept, held out): a seeded `fraction` of the sampled lines outside
    the centre band (per slice for an (S, H, W) mask) is held out, the centre band always kept.

    Reconstructing from `kept` and comparing with the measurement on `held` is a check that needs
    no ground truth (benchmarks/real_mri.py `--holdout`). The held-out lines follow the mask's own
    line density, so they test mostly the low and middle frequencies a variable-density mask favours.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim not in (2, 3):
        raise InputError(f"mask: expected (H, W) or (S, H, W), got shape {mask.shape}")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout fraction must lie in (0, 1), got {fraction}")
    planes = mask.reshape(-1, *mask.shape[-2:])
    centre = center_band(mask.shape[-1], center_fraction)
    rng = np.random.default_rng(seed)
    held = np.zeros_like(planes)
    for s, plane in enumerate(planes):
        lines = np.flatnonzero(plane.any(axis=0))
        outer = np.setdiff1d(lines, centre)
        if len(outer) == 0:
            raise InputError(f"mask slice {s}: no sampled line outside the centre band to hold out")
        n = max(1, min(int(round(fraction * len(outer))), len(outer) - 1))  # at least one, and one kept where two or more
        held[s][:, rng.permutation(outer)[:n]] = True
    held = held.reshape(mask.shape) & mask
    return mask & ~held, held


def acceleration_of(mask: np.ndarray) -> float:
    """Achieved acceleration: all k-space samples over sampled ones (= lines / sampled lines)."""
    mask = np.asarray(mask, dtype=bool)
    n_sampled = int(mask.sum())
    if n_sampled == 0:
        raise InputError("mask samples no k-space point; acceleration is undefined")
    return mask.size / n_sampled
