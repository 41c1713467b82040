"""Volumes to multi-slice arrays: pick the S-slice slab, crop around the object with a margin, scale.

`preprocess_volume` turns an (x, y, z) volume into a float32 (S, H, W) array in [0, 1]:
1. `select_slab`: the S consecutive axial slices holding the most foreground;
2. `crop_resize`: one box for all slices around the foreground, widened by a background margin
   on every side (a tight crop puts uniform-mask aliasing on the object itself; docs/method.md,
   "Departures from the paper"), then
   resized to H x W with anti-aliasing;
3. `scale01`: divide by the 99.5th percentile of the foreground and clip to [0, 1].
`split_subjects` assigns subject ids to train/val/test, seeded.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_triangle
from skimage.transform import resize

from physdiff.errors import ConfigError, InputError


def foreground_mask(x: np.ndarray) -> np.ndarray:
    """Object voxels: the lightly smoothed image (sigma 0.7 voxel) above its triangle threshold.

    The triangle method suits both a brain (a large object) and roots (a sparse one, where Otsu
    splits the noise); the smoothing removes most isolated noise voxels. A few remain, so
    bounding boxes use coordinate percentiles.
    """
    x = ndimage.gaussian_filter(np.asarray(x, dtype=np.float32), 0.7)
    if x.max() <= x.min():
        return np.zeros(x.shape, dtype=bool)
    return x > threshold_triangle(x)


def slab_start(volume: np.ndarray, n_slices: int, *, axis: int = 2) -> int:
    """The first of the `n_slices` consecutive slices along `axis` with the most foreground.

    Ties go to the lowest start index, so the choice is deterministic.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise InputError(f"select_slab: expected a 3D volume, got shape {volume.shape}")
    depth = volume.shape[axis]
    if n_slices < 1 or depth < n_slices:
        raise InputError(
            f"select_slab: volume has {depth} slices along axis {axis}; expected at least n_slices={n_slices}"
        )
    counts = foreground_mask(np.moveaxis(volume, axis, 0)).sum(axis=(1, 2))
    if counts.sum() == 0:
        raise InputError("select_slab: volume has no foreground (constant intensity)")
    window = np.convolve(counts, np.ones(n_slices, dtype=np.int64), mode="valid")
    return int(np.argmax(window))


def select_slab(volume: np.ndarray, n_slices: int, *, axis: int = 2) -> np.ndarray:
    """The `n_slices` consecutive slices along `axis` with the most foreground (`slab_start`), as (S, X, Y)."""
    start = slab_start(volume, n_slices, axis=axis)
    slices = np.moveaxis(np.asarray(volume, dtype=np.float32), axis, 0)
    return np.ascontiguousarray(slices[start : start + n_slices])


def _crop_window(lo: int, hi: int, side: int, n: int) -> tuple[int, int]:
    """A window of `side` pixels centred on [lo, hi), shifted to stay inside [0, n) where it fits."""
    start = (lo + hi) // 2 - side // 2
    if side <= n:
        start = min(max(start, 0), n - side)
    return start, start + side


def crop_box(slab: np.ndarray, *, size: Sequence[int], margin: float = 0.15) -> tuple[int, int, int, int]:
    """The in-plane box (x0, x1, y0, y1), in pixels of `slab` (S, X, Y), that `crop_resize` cuts.

    The foreground's bounding box (union over slices) is widened by `margin` times its larger
    side on each side and grown to the aspect ratio H : W of `size`; it may reach past the image
    (negative x0, x1 > X), where `crop_resize` pads with zeros.
    """
    slab = np.asarray(slab, dtype=np.float32)
    height, width = int(size[0]), int(size[1])
    if slab.ndim != 3 or height < 1 or width < 1:
        raise InputError(f"crop_resize: expected an (S, X, Y) slab and positive size, got {slab.shape}, {size}")
    if not 0 <= margin < 5:
        raise ConfigError(f"crop margin must be a fraction in [0, 5), got {margin}")
    rows, cols = np.nonzero(foreground_mask(slab).any(axis=0))
    if rows.size == 0:
        raise InputError("crop_resize: slab has no foreground to crop around")
    # Percentiles rather than min/max, so stray noise voxels do not stretch the box.
    (r0, r1), (c0, c1) = np.percentile(rows, [0.1, 99.9]).astype(int), np.percentile(cols, [0.1, 99.9]).astype(int)
    box = max(r1 - r0 + 1, c1 - c0 + 1)
    # An object that fills the field of view leaves no room for a margin; pad no further than that.
    side = min(box * (1 + 2 * margin), max(slab.shape[1:]))
    scale = side / max(height, width)
    sx, sy = math.ceil(scale * height), math.ceil(scale * width)
    x0, x1 = _crop_window(r0, r1 + 1, sx, slab.shape[1])
    y0, y1 = _crop_window(c0, c1 + 1, sy, slab.shape[2])
    return x0, x1, y0, y1


def crop_resize(slab: np.ndarray, *, size: Sequence[int], margin: float = 0.15) -> np.ndarray:
    """Crop all slices to one box around the foreground plus a margin (`crop_box`), then resize to
    `size` = (H, W); parts outside the image are zeros."""
    slab = np.asarray(slab, dtype=np.float32)
    height, width = int(size[0]), int(size[1])
    x0, x1, y0, y1 = crop_box(slab, size=size, margin=margin)
    pad = [(0, 0), (max(-x0, 0), max(x1 - slab.shape[1], 0)), (max(-y0, 0), max(y1 - slab.shape[2], 0))]
    padded = np.pad(slab, pad)
    crop = padded[:, x0 + pad[1][0] : x1 + pad[1][0], y0 + pad[2][0] : y1 + pad[2][0]]
    out = resize(crop, (slab.shape[0], height, width), order=1, anti_aliasing=True, preserve_range=True)
    return out.astype(np.float32)


def scale01(x: np.ndarray, *, percentile: float = 99.5) -> np.ndarray:
    """Scale to [0, 1]: `clip(x / p, 0, 1)` with p the `percentile` of the foreground intensities."""
    x = np.asarray(x, dtype=np.float32)
    fg = foreground_mask(x)
    values = x[fg] if fg.any() else x.ravel()
    p = float(np.percentile(values, percentile))
    if not p > 0:
        raise InputError(f"scale01: the {percentile}th percentile of the foreground is {p}; expected > 0")
    return np.clip(x / p, 0.0, 1.0).astype(np.float32)


def preprocess_volume(
    volume: np.ndarray, *, n_slices: int, size: Sequence[int], margin: float = 0.15, axis: int = 2
) -> np.ndarray:
    """(x, y, z) volume to a float32 (S, H, W) multi-slice array in [0, 1]."""
    return scale01(crop_resize(select_slab(volume, n_slices, axis=axis), size=size, margin=margin))


def split_subjects(
    ids: Sequence[str], *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int
) -> dict[str, list[str]]:
    """Seeded split of subject ids into disjoint 'train', 'val' and 'test' lists (each sorted).

    Each split with a positive fraction gets at least one subject; the ids' input order does
    not matter.
    """
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ConfigError(f"split fractions must be three non-negative numbers (train, val, test) summing to 1, got {fractions}")
    ids = sorted(str(i) for i in ids)
    if len(set(ids)) != len(ids):
        raise InputError("split_subjects: subject ids are not unique")
    needed = sum(f > 0 for f in fractions)
    if len(ids) < needed:
        raise InputError(f"split_subjects: {len(ids)} subjects cannot fill {needed} non-empty splits {fractions}")
    n = len(ids)
    counts = [max(1, round(f * n)) if f > 0 else 0 for f in fractions[1:]]
    # Shrink the larger of val/test until train keeps its share (at least one subject).
    while fractions[0] > 0 and n - sum(counts) < 1 or n - sum(counts) < 0:
        k = int(np.argmax(counts))
        counts[k] -= 1
    if fractions[0] == 0:  # no training share: the remainder goes to test
        counts[1] = n - counts[0]
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    n_val, n_test = counts
    n_train = n - n_val - n_test
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }
