"""SSIM and PSNR as the paper's tables score them (docs/method.md, "Scores").

All scores call `skimage.metrics` with skimage's defaults (7 x 7 uniform window, K1 = 0.01,
K2 = 0.03) in float64, and take `data_range` from the ground truth only (ref.max() - ref.min()
over the whole volume or projection), so a reconstruction cannot change the scale it is judged
on and all slices of one volume share one scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from physdiff.errors import InputError


def _pair(x: Any, ref: Any, *, ndim: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, ref = (np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, dtype=np.float64) for a in (x, ref))
    if ref.ndim != ndim or x.shape != ref.shape:
        raise InputError(f"{what}: expected reconstruction and reference of the same {ndim}-D shape, "
                         f"got {x.shape} and {ref.shape}")
    for name, a in (("reconstruction", x), ("reference", ref)):
        if not np.all(np.isfinite(a)):
            raise InputError(f"{what}: the {name} holds NaN or infinite values")
    return x, ref


def _data_range(ref: np.ndarray, what: str, data_range: float | None) -> float:
    rng = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    if not rng > 0:
        raise InputError(f"{what}: the reference is constant (data range {rng}), so SSIM/PSNR are undefined")
    return rng


def ssim_per_slice(x: Any, ref: Any, *, data_range: float | None = None) -> np.ndarray:
    """Per-slice 2D SSIMs (S,) of x against ref, both (S, H, W), one data range for the volume.

    data_range defaults to ref.max() - ref.min() over the whole reference volume.
    """
    x, ref = _pair(x, ref, ndim=3, what="ssim_per_slice")
    rng = _data_range(ref, "ssim_per_slice", data_range)
    return np.array([structural_similarity(a, b, data_range=rng) for a, b in zip(x, ref)])


def ssim_volume(x: Any, ref: Any, *, data_range: float | None = None) -> float:
    """MRI score: mean over slices of the 2D SSIM of x against the ground truth ref, both (S, H, W).

    data_range = ref.max() - ref.min() over the ground-truth volume unless given.
    """
    return float(np.mean(ssim_per_slice(x, ref, data_range=data_range)))


def ssim_phase_projection(v_rec: Any, v_ref: Any, sigma: float) -> float:
    """4D-STEM score: 2D SSIM of the phase projections sigma * sum_s V_s (rad).

    v_rec, v_ref: potentials (S, H, W) in V·Å; sigma: interaction constant in rad/(V·Å).
    data_range is that of the reference projection.
    """
    v_rec, v_ref = _pair(v_rec, v_ref, ndim=3, what="ssim_phase_projection")
    p_rec, p_ref = sigma * v_rec.sum(axis=0), sigma * v_ref.sum(axis=0)
    return float(structural_similarity(p_rec, p_ref, data_range=_data_range(p_ref, "ssim_phase_projection", None)))


def psnr_volume(x: Any, ref: Any, *, data_range: float | None = None) -> float:
    """PSNR in dB of the whole volume x against ref (any equal shapes): 10 log10(range^2 / MSE).

    data_range = ref.max() - ref.min() over the ground truth unless given; identical inputs give inf.
    """
    x, ref = _pair(x, ref, ndim=np.ndim(ref), what="psnr_volume")
    rng = _data_range(ref, "psnr_volume", data_range)
    if np.array_equal(x, ref):
        return float("inf")  # skimage would warn on the division by a zero MSE
    return float(peak_signal_noise_ratio(ref, x, data_range=rng))
