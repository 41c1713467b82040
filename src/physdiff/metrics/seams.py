"""Seams between partitions: how much the slices meeting at a boundary differ.

seam ratio = mean |x[b] - x[b-1]| over the boundaries b / mean |x[s+1] - x[s]| over every
other neighbouring pair, both averaged over volumes and pixels. Real volumes sit near 1; a
partitioned prior whose slabs disagree at their boundaries scores above 1.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from physdiff.errors import InputError


def slice_differences(volumes: np.ndarray) -> np.ndarray:
    """Mean absolute difference of each neighbouring slice pair, (S - 1,), over volumes and pixels."""
    volumes = np.asarray(volumes, dtype=np.float64)
    if volumes.ndim != 4:
        raise InputError(f"volumes must be (N, S, H, W), got shape {volumes.shape}")
    return np.abs(np.diff(volumes, axis=1)).mean(axis=(0, 2, 3))


def seam_ratio(volumes: np.ndarray, boundaries: Iterable[int]) -> float:
    """Mean slice difference across the `boundaries` (first slice index of each later slab) over the rest.

    Returns inf where the other pairs do not differ at all but the seams do, nan where neither does.
    """
    diffs = slice_differences(volumes)
    s = len(diffs) + 1
    bounds = sorted({int(b) for b in boundaries})
    if not bounds or any(not 1 <= b <= s - 1 for b in bounds):
        raise InputError(f"boundaries must be slice indices in [1, {s - 1}] for S={s}, got {bounds}")
    seam = np.zeros(len(diffs), bool)
    seam[[b - 1 for b in bounds]] = True  # pair (b-1, b)
    if seam.all():
        raise InputError(f"every neighbouring pair of the S={s} slices is a seam; nothing to compare with")
    across, within = diffs[seam].mean(), diffs[~seam].mean()
    if within == 0:
        return float("nan") if across == 0 else float("inf")
    return float(across / within)


def partition_boundaries(num_slices: int, partitions: int) -> list[int]:
    """First slice of each slab after the first, as `physdiff.models.sampling.partition_bounds` cuts them."""
    return [g * num_slices // partitions for g in range(1, partitions)]
