"""Fourier-space building blocks of the 4D-STEM forward model, in abTEM 1.0.11's conventions.

Everything here is computed in float64 on the CPU and cast by the caller, so the
complex64 and complex128 models share the same grids bit for bit (docs/method.md, "Conventions").
Grids: frequencies are ``fftfreq(N, d=sampling)`` in 1/Å, arrays in unshifted FFT order.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# abTEM's configured antialias cutoff (``antialias.cutoff``) is 0.6666666, not exactly 2/3;
# the difference moves a few edge pixels of the taper, so we copy it.
ANTIALIAS_CUTOFF = 0.6666666
ANTIALIAS_TAPER = 0.01


def spatial_frequencies(gpts: tuple[int, int], sampling: tuple[float, float]):
    """Return (kx, ky) as float64 tensors of shape (H, 1) and (1, W), in 1/Å."""
    kx = torch.from_numpy(np.fft.fftfreq(gpts[0], d=sampling[0]))[:, None]
    ky = torch.from_numpy(np.fft.fftfreq(gpts[1], d=sampling[1]))[None, :]
    return kx, ky


def antialias_aperture(gpts: tuple[int, int], sampling: tuple[float, float]) -> torch.Tensor:
    """Return abTEM's band-limiting mask A(k), float64 (H, W).

    A(k) = 1 for |k| < k_c - w, 0.5 (1 + cos(pi (|k| - k_c + w) / w)) up to k_c, 0 beyond,
    with k_c = (2/3) / (2 max(dx)) and taper width w = 0.01 / max(dx) (1/Å).
    """
    kx, ky = spatial_frequencies(gpts, sampling)
    k = torch.sqrt(kx**2 + ky**2)
    cutoff = ANTIALIAS_CUTOFF / max(sampling) / 2
    taper = ANTIALIAS_TAPER / max(sampling)
    edge = 0.5 * (1 + torch.cos(math.pi * (k - cutoff + taper) / taper))
    edge = torch.where(k > cutoff, torch.zeros_like(k), edge)
    return torch.where(k > cutoff - taper, edge, torch.ones_like(k))


def soft_probe_aperture(
    gpts: tuple[int, int], sampling: tuple[float, float], wavelength: float, semiangle: float
) -> torch.Tensor:
    """Return abTEM's soft condenser aperture, float64 (H, W).

    A(alpha, phi) = clip((alpha_c - alpha) / d(phi) + 1/2, 0, 1), alpha = lambda |k| (rad),
    d(phi) = sqrt((cos(phi) dalpha_x)^2 + (sin(phi) dalpha_y)^2) one angular pixel,
    dalpha = lambda / extent (rad). A hard disk would be off by 36%.
    """
    kx, ky = spatial_frequencies(gpts, sampling)
    alpha = wavelength * torch.sqrt(kx**2 + ky**2)
    phi = torch.atan2(ky.expand(gpts), kx.expand(gpts))
    dax = wavelength / (gpts[0] * sampling[0])
    day = wavelength / (gpts[1] * sampling[1])
    denominator = torch.sqrt((torch.cos(phi) * dax) ** 2 + (torch.sin(phi) * day) ** 2)
    aperture = torch.clamp((semiangle * 1e-3 - alpha) / denominator + 0.5, 0.0, 1.0)
    aperture[0, 0] = 1.0
    return aperture


def probe_fourier(
    gpts: tuple[int, int],
    sampling: tuple[float, float],
    wavelength: float,
    semiangle: float,
    defocus: float,
) -> torch.Tensor:
    """Return the probe Psi(k) at the origin, complex128 (H, W), with sum_k |Psi(k)|^2 = 1.

    Psi(k) = A(alpha) exp(-i chi(alpha)), chi = (2 pi / lambda) (1/2) C10 alpha^2 and
    C10 = -defocus (Å); alpha = lambda |k| (rad). The real-space probe is ifft2(Psi)
    (numpy convention, 1/N on the inverse).
    """
    kx, ky = spatial_frequencies(gpts, sampling)
    alpha2 = wavelength**2 * (kx**2 + ky**2)
    chi = 2 * math.pi / wavelength * 0.5 * (-defocus) * alpha2
    psi = soft_probe_aperture(gpts, sampling, wavelength, semiangle) * torch.exp(-1j * chi)
    return psi / torch.sqrt((psi.abs() ** 2).sum())


def _parity_like(n: int, reference: int) -> int:
    """Add one to n where its parity differs from the reference's (abTEM's rule)."""
    return n + 1 if (n % 2) != (reference % 2) else n


def detector_gpts(max_angle: str, gpts: tuple[int, int], sampling: tuple[float, float]):
    """Return the detector shape abTEM's ``PixelatedDetector(max_angle)`` gives.

    "full": the whole grid; "cutoff": floor(k_c' extent) with k_c' = (2/3)/max(dx),
    "valid": floor(cutoff / sqrt 2); each made to share the parity of the grid.
    """
    if max_angle == "full":
        return tuple(int(n) for n in gpts)
    kcut = 2.0 / 3.0 / max(sampling)
    cut = tuple(
        _parity_like(int(math.floor(kcut * n * d + 1e-9)), n) for n, d in zip(gpts, sampling)
    )
    if max_angle == "cutoff":
        return cut
    if max_angle == "valid":
        return tuple(_parity_like(int(math.floor(c / math.sqrt(2) + 1e-9)), n) for c, n in zip(cut, gpts))
    raise ValueError(f"max_angle must be 'valid', 'cutoff' or 'full', got {max_angle!r}")


def crop_indices(n_full: int, n_crop: int) -> torch.Tensor:
    """Return the FFT-order indices abTEM's ``fft_crop`` keeps, already fftshifted.

    Indexing an unshifted spectrum with them gives the centrally cropped, fftshifted one.
    """
    low = n_crop // 2 if n_crop % 2 == 0 else n_crop // 2 + 1
    kept = np.r_[0:low, n_full - (n_crop - low) : n_full]
    return torch.from_numpy(np.fft.fftshift(kept)).long()
