"""Single-coil Cartesian MRI: the undersampled Fourier operator and data consistency (docs/method.md, "MRI").

Measurement per slice s (docs/method.md, "MRI"):

    y_s = M_s ⊙ F x_s (+ n),

with F the centred orthonormal 2D DFT (ifftshift -> fft2(norm="ortho") -> fftshift over the
last two axes), the same convention as `sigpy.fft(..., center=True, norm="ortho")`, and M_s a
boolean mask in centred k-space layout (k = 0 at index N // 2). Everything here takes numpy
arrays (returns numpy) or torch tensors (real or complex, any device, any leading batch dims
`(..., S, H, W)`; returns torch and stays differentiable).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from physdiff.errors import InputError

_AXES = (-2, -1)


def fft2c(x: Any) -> Any:
    """Centred orthonormal 2D DFT over the last two axes: fftshift(fft2(ifftshift(x), ortho))."""
    if isinstance(x, torch.Tensor):
        x = torch.fft.ifftshift(x, dim=_AXES)
        return torch.fft.fftshift(torch.fft.fft2(x, dim=_AXES, norm="ortho"), dim=_AXES)
    x = _as_complex_numpy(x)
    x = np.fft.ifftshift(x, axes=_AXES)
    return np.fft.fftshift(np.fft.fft2(x, axes=_AXES, norm="ortho"), axes=_AXES).astype(x.dtype, copy=False)


def ifft2c(k: Any) -> Any:
    """Centred orthonormal inverse 2D DFT over the last two axes (the adjoint and inverse of fft2c)."""
    if isinstance(k, torch.Tensor):
        k = torch.fft.ifftshift(k, dim=_AXES)
        return torch.fft.fftshift(torch.fft.ifft2(k, dim=_AXES, norm="ortho"), dim=_AXES)
    k = _as_complex_numpy(k)
    k = np.fft.ifftshift(k, axes=_AXES)
    return np.fft.fftshift(np.fft.ifft2(k, axes=_AXES, norm="ortho"), axes=_AXES).astype(k.dtype, copy=False)


def _as_complex_numpy(x: Any) -> np.ndarray:
    # Keep single precision single: float32 -> complex64, float64 -> complex128.
    x = np.asarray(x)
    if np.iscomplexobj(x):
        return x
    return x.astype(np.complex64 if x.dtype in (np.float16, np.float32) else np.complex128)


def check_mask(mask: Any, shape: tuple[int, ...] | None = None, *, name: str = "mask") -> np.ndarray:
    """Validate a sampling mask and return it as a numpy bool array (H, W) or (S, H, W).

    A mask may be bool or hold only 0/1 values. When `shape` (the image or k-space shape,
    `(..., S, H, W)` or `(H, W)`) is given, the mask must match its last two axes and, if the mask
    is per slice, the slice axis too.
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise InputError(f"{name}: expected a (H, W) or (S, H, W) array, got shape {mask.shape}")
    if mask.dtype != bool:
        if not np.all(np.isin(mask, (0, 1))):
            raise InputError(f"{name}: expected a boolean mask (or only 0/1 values), got dtype {mask.dtype}")
        mask = mask.astype(bool)
    if shape is not None:
        shape = tuple(shape)
        if len(shape) < 2 or shape[-2:] != mask.shape[-2:]:
            raise InputError(f"{name}: shape {mask.shape} does not match the image/k-space shape {shape} "
                             "in its last two axes (H, W)")
        if mask.ndim == 3 and (len(shape) < 3 or shape[-3] != mask.shape[0]):
            raise InputError(f"{name}: per-slice mask of shape {mask.shape} needs data of shape (..., "
                             f"{mask.shape[0]}, H, W), got {shape}")
    return mask


class MRIForward:
    """Undersampled centred Fourier operator A = M ⊙ F (single coil, Cartesian), deepinv style.

    `A(x)` / `forward(x)` maps an image (..., S, H, W) to masked k-space; `A_adjoint(y)` /
    `adjoint(y)` maps k-space back: A^H y = F^-1 (M ⊙ y). Because F is unitary, A A^H = M, so
    ||A|| = 1 whenever any line is sampled and A^H A is an orthogonal projection; A^H is also
    the pseudo-inverse A^+. Numpy in -> numpy out; torch in -> torch out on the input's device.
    """

    def __init__(self, mask: Any):
        self.mask = check_mask(mask)
        self._torch_masks: dict[torch.device, torch.Tensor] = {}

    def _mask_like(self, x: Any, what: str) -> Any:
        check_mask(self.mask, tuple(x.shape), name=f"mask (for {what})")
        if isinstance(x, torch.Tensor):
            # Cache one copy per device so that a DART loop does not re-upload the mask each step.
            if x.device not in self._torch_masks:
                self._torch_masks[x.device] = torch.from_numpy(self.mask).to(x.device)
            return self._torch_masks[x.device]
        return self.mask

    def A(self, x: Any) -> Any:
        """Masked k-space y = M ⊙ F x of an image x (..., S, H, W); unsampled entries are 0."""
        k = fft2c(x)
        return k * self._mask_like(k, "image x")

    def A_adjoint(self, y: Any) -> Any:
        """Zero-filled complex image A^H y = F^-1 (M ⊙ y) of k-space y (..., S, H, W)."""
        return ifft2c(y * self._mask_like(y, "k-space y"))

    forward = A
    adjoint = A_adjoint
    A_dagger = A_adjoint

    def __call__(self, x: Any) -> Any:
        return self.A(x)


def simulate_kspace(x: np.ndarray, mask: Any, *, noise_std: float = 0.0, seed: int | None = None) -> np.ndarray:
    """Undersampled k-space y = M ⊙ (F x + n) of a magnitude volume x (S, H, W).

    `n` is circular complex Gaussian noise with standard deviation `noise_std` per real and
    imaginary part, in the units of x (F is orthonormal, so image and k-space noise levels agree).
    Returns complex64 for float32 input.
    """
    x = _check_finite(x, "volume x")
    mask = check_mask(mask, x.shape)
    k = fft2c(x)
    if noise_std > 0:
        rng = np.random.default_rng(seed)
        k = k + noise_std * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)).astype(k.dtype)
    return k * mask


def zero_filled(y: Any, mask: Any) -> Any:
    """Zero-filled magnitude image |F^-1 (M ⊙ y)|; y is masked again, which is a no-op for measured y."""
    x = MRIForward(mask).A_adjoint(y)
    return x.abs() if isinstance(x, torch.Tensor) else np.abs(x)


def data_consistency(x: Any, y: Any, mask: Any, lam: float = 1.0, *, magnitude: bool = False) -> Any:
    """Data-consistency step, Eq. (4) of docs/method.md: x <- F^-1 [ F x - lam * M ⊙ (F x - y) ].

    lam = 1 replaces the sampled k-space entries of F x by the measured y (hard consistency);
    lam = 0 returns x unchanged; 0 < lam < 1 moves the sampled entries part of the way.
    Unsampled entries of F x are never changed. Returns the complex image, or its magnitude
    with `magnitude=True` (the DART step scores and feeds back magnitudes).
    """
    if not 0.0 <= lam <= 1.0:
        raise InputError(f"data_consistency: lam must lie in [0, 1], got {lam}")
    op = MRIForward(mask)
    kx = fft2c(x)
    m = op._mask_like(kx, "image x")
    out = ifft2c(kx - lam * (m * (kx - y)))
    if magnitude:
        return out.abs() if isinstance(out, torch.Tensor) else np.abs(out)
    return out


def _check_finite(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name}: holds NaN or infinite values")
    return a
