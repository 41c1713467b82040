"""Classical MRI baselines of the paper's tables: zero-filled, CS L1-wavelet, TV, projection.

docs/method.md, "Baselines".

Every baseline has the call `fn(y, mask, *, x0=None, **params) -> (S, H, W) float32 magnitude`,
with y the undersampled centred k-space (S, H, W) complex (`physdiff.physics.mri`, y = M ⊙ F x),
mask bool (H, W) or (S, H, W), and x0 an optional start image (S, H, W), real or complex (None:
each method's documented default), so a "physics-only twin" can start from any volume. Intensities are those of the images (F is orthonormal), so the
regularisation weights are in image units (our images lie in [0, 1]).

sigpy conventions checked against ours (tests/test_mri_baselines.py):
- `sigpy.fft` is the same centred orthonormal DFT, so y and the mask go in as they are;
- the apps take the mask as `weights`; left out, sigpy guesses it from y != 0, which breaks as
  soon as y holds noise outside the mask or an exact zero inside it, so we always pass it;
- the apps estimate step sizes with a power iteration seeded from numpy's global RNG, so runs
  differ in the last digits and the global RNG is consumed; we pass the known step sizes instead:
  ||A||^2 = 1 (A^H A is a projection) and ||[A; G]||^2 <= 1 + 4 * 2 for 2D circular differences.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pywt
import sigpy as sp
import sigpy.mri as mr
from scipy import ndimage
from tqdm.auto import tqdm

from physdiff.errors import ConfigError, InputError
from physdiff.metrics.ssim import ssim_volume
from physdiff.physics.mri import MRIForward, check_mask, data_consistency, simulate_kspace, zero_filled
from physdiff.recon.tuning import tune_scalar


def _check(y: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate k-space (S, H, W) and mask; return y as complex64 and the mask broadcast to (S, H, W)."""
    y = np.asarray(y)
    if y.ndim != 3:
        raise InputError(f"k-space y: expected shape (S, H, W), got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise InputError("k-space y: holds NaN or infinite values")
    mask = check_mask(mask, y.shape)
    return y.astype(np.complex64, copy=False), np.broadcast_to(mask, y.shape)


def _start(x0: Any, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The start image: x0 as complex64 (S, H, W), or the zero-filled complex image F^-1 y if None."""
    if x0 is None:
        return MRIForward(mask).A_adjoint(y).astype(np.complex64)
    x0 = np.asarray(x0)
    if x0.shape != y.shape:
        raise InputError(f"start image x0: expected shape {y.shape} (S, H, W), got {x0.shape}")
    if not np.all(np.isfinite(x0)):
        raise InputError("start image x0: holds NaN or infinite values")
    return x0.astype(np.complex64)


def zero_filled_recon(y: Any, mask: Any, *, show_pbar: bool = False) -> np.ndarray:
    """Zero-filled magnitude |F^-1 (M ⊙ y)|, slice by slice."""
    y, mask = _check(y, mask)
    return zero_filled(y, mask).astype(np.float32)


def _sigpy_per_slice(make_app: Callable[..., sp.app.App], y: np.ndarray, mask: np.ndarray, desc: str,
                     show_pbar: bool, x0: np.ndarray | None = None) -> np.ndarray:
    # Single coil: one sensitivity map of ones, so sigpy's Sense operator is just M ⊙ F.
    mps = np.ones((1, *y.shape[1:]), np.complex64)
    out = np.empty(y.shape, np.float32)
    for s in tqdm(range(y.shape[0]), desc=desc, unit="slice", disable=not show_pbar, leave=False):
        weights = mask[s].astype(np.float32)
        start = None if x0 is None else x0[s].copy()  # sigpy updates its x in place
        app = make_app(y[s][None] * weights, mps, weights, start)
        out[s] = np.abs(app.run())
    return out


def cs_l1_wavelet(y: Any, mask: Any, *, lam: float, max_iter: int = 400, wave_name: str = "haar",
                  levels: int | None = 1, cycle_spin: bool = True, seed: int = 0, x0: Any = None,
                  show_pbar: bool = False) -> np.ndarray:
    """CS-MRI (Lustig 2007): argmin_x 1/2 ||M F x - y||^2 + lam ||W x||_1, FISTA on all slices at once.

    Accelerated proximal gradient with step 1 = 1/||A||^2 (A = M F, A^H A a projection), so the
    gradient step is hard data consistency, Eq. (4) with lambda = 1:
        z_k <- F^-1 [F x - M ⊙ (F x - y)],  x <- S^-1 shrink_lam(S z_k),
    with shrink the soft thresholding of all coefficients of the orthonormal (periodised)
    `wave_name` wavelet with `levels` decomposition levels (None: as many as the image allows),
    coarse ones included as in BART (keeping them unshrunk cost 0.06 SSIM against BART on the
    test phantom), and S a random circular shift of the image drawn anew each iteration
    (seeded by `seed`) when `cycle_spin` is on. Random cycle spinning, as BART's `pics -l1`
    does, averages the prox over shifts and removes the blocky artefacts of a shift-variant
    transform. Starts at x0 (None: the zero-filled complex image); returns |x| (S, H, W) float32.
    """
    y, mask = _check(y, mask)
    rng = np.random.default_rng(seed)
    x = _start(x0, y, mask)
    z, t = x, 1.0
    for _ in tqdm(range(max_iter), desc="CS L1-wavelet", unit="it", disable=not show_pbar, leave=False):
        g = data_consistency(z, y, mask, 1.0)
        shift = tuple(int(v) for v in rng.integers(0, y.shape[-2:])) if cycle_spin else (0, 0)
        rolled = np.roll(g, shift, axis=(-2, -1))
        shrunk = wavelet_shrink(rolled, lam, wave_name=wave_name, coarse=True, levels=levels)
        x_new = np.roll(shrunk, (-shift[0], -shift[1]), axis=(-2, -1))
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return np.abs(x).astype(np.float32)


def tv_recon(y: Any, mask: Any, *, lam: float, max_iter: int = 200, dual_step: float = 0.2,
             x0: Any = None, show_pbar: bool = False) -> np.ndarray:
    """TV (Block 2007): argmin_x 1/2 ||M F x - y||^2 + lam ||G x||_1 per slice, via sigpy.

    `sigpy.mri.app.TotalVariationRecon`: primal-dual hybrid gradient with anisotropic circular
    finite differences G; returns the magnitude (S, H, W) float32. Steps sigma = `dual_step`,
    tau = 1 / (9 sigma), since ||[A; G]||^2 <= 1 + 8. sigpy's own choice (sigma = 1) is stable
    but slow: on 64 x 64 FLAIR-like slices it was still 13 % from the solution after 100
    iterations, against 2 % with sigma = 0.1-0.3. Starts at x0 (None: sigpy's start, x = 0).
    """
    y, mask = _check(y, mask)
    start = None if x0 is None else _start(x0, y, mask)
    return _sigpy_per_slice(
        lambda ys, mps, w, xs: mr.app.TotalVariationRecon(ys, mps, lam, weights=w, max_iter=max_iter, sigma=dual_step,
                                                          tau=1.0 / (9.0 * dual_step), x=xs, show_pbar=False),
        y, mask, "TV", show_pbar, start)


def wavelet_shrink(x: np.ndarray, thresh: float, *, wave_name: str = "db4", coarse: bool = False,
                   levels: int | None = None) -> np.ndarray:
    """Soft-threshold the coefficients of an orthonormal (periodised) 2D wavelet transform.

    The prox of thresh * ||W_detail x||_1: by default the coarse approximation is kept, since
    the fully sampled centre of k-space already fixes it; `coarse=True` shrinks it too, the
    prox of thresh * ||W x||_1 (complex coefficients shrink in magnitude). `levels` is the number
    of decomposition levels (None: pywt's maximum for the image size).
    """
    if thresh <= 0:
        return x  # pywt's soft threshold divides by |c| and turns 0/0 into NaN at thresh = 0
    coeffs = pywt.wavedec2(x, wave_name, mode="periodization", axes=(-2, -1), level=levels)
    approx = pywt.threshold(coeffs[0], thresh, "soft") if coarse else coeffs[0]
    coeffs = [approx] + [tuple(pywt.threshold(d, thresh, "soft") for d in det) for det in coeffs[1:]]
    return pywt.waverec2(coeffs, wave_name, mode="periodization", axes=(-2, -1))[..., : x.shape[-2], : x.shape[-1]]


def estimate_support(y: Any, mask: Any, *, fraction: float = 0.1, smooth_px: float = 1.0,
                     dilate_px: int = 2) -> np.ndarray:
    """Object support (S, H, W) bool from the zero-filled image: smoothed |F^-1 y| > fraction * slice max.

    Smoothing (Gaussian, `smooth_px` pixels) keeps noise out; dilation by `dilate_px` pixels keeps
    the blurred edges in, so the support errs on the side of being too large.
    """
    y, mask = _check(y, mask)
    img = ndimage.gaussian_filter(zero_filled(y, mask), (0, smooth_px, smooth_px))
    support = img > fraction * img.max(axis=(-2, -1), keepdims=True)
    if dilate_px > 0:
        support = ndimage.binary_dilation(support, np.ones((1, 2 * dilate_px + 1, 2 * dilate_px + 1), bool))
    return support


def projection_based(y: Any, mask: Any, *, n_iter: int = 50, wavelet_thresh: float = 0.01,
                     support: np.ndarray | None = None, wave_name: str = "db4", x0: Any = None,
                     show_pbar: bool = False) -> np.ndarray:
    """Projection-based reconstruction: our re-implementation of Bangun et al. 2025 (no public code).

    Our reading: POCS-style alternation, all slices at once, starting from x0 (None:
    the zero-filled complex image F^-1 y):
        x <- P_prior(x): Re(x) clipped at 0 (a magnitude image is real and non-negative), set to
             0 outside the support (estimated from the zero-filled image if not given), then
             soft shrinkage of its wavelet details by `wavelet_thresh` (image units);
        x <- P_DC(x) = F^-1 [ F x - M ⊙ (F x - y) ] (hard data consistency, Eq. (4), lam = 1).
    Returns |x| after the last data-consistency projection, (S, H, W) float32.
    """
    y, mask = _check(y, mask)
    if support is None:
        support = estimate_support(y, mask)
    support = check_mask(support, y.shape, name="support")
    x = _start(x0, y, mask)
    for _ in tqdm(range(n_iter), desc="projection", unit="it", disable=not show_pbar, leave=False):
        prior = wavelet_shrink(np.clip(x.real, 0.0, None) * support, wavelet_thresh, wave_name=wave_name)
        x = data_consistency(prior.astype(np.float32), y, mask, 1.0)
    return np.abs(x).astype(np.float32)


MRI_BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "zero_filled": zero_filled_recon,
    "cs_l1_wavelet": cs_l1_wavelet,
    "tv": tv_recon,
    "projection": projection_based,
}

# The keyword that `choose_lambda` searches over for each method.
REGULARISATION_PARAM = {"cs_l1_wavelet": "lam", "tv": "lam", "projection": "wavelet_thresh"}


def choose_lambda(method: str, volumes_val: Sequence[np.ndarray] | np.ndarray, mask: Any, grid: Sequence[float],
                  *, noise_std: float = 0.0, seed: int = 0, max_extend: int = 3, refine: int = 1,
                  show_pbar: bool = False, **kw: Any) -> dict[str, Any]:
    """Pick the regularisation weight of `method` on validation volumes by mean SSIM (`tune_scalar`).

    Each ground-truth volume (S, H, W) is measured as y = M ⊙ (F x + n) (noise std `noise_std`,
    seeded), reconstructed with each value tried (keyword `REGULARISATION_PARAM[method]`, other
    keywords from `kw`) and scored with `ssim_volume`. The grid is extended geometrically past
    a winning edge at most `max_extend` times, then refined `refine` times around the best.
    Returns {"best": value, "on_edge": bool, "table": [{"lam", "ssim_mean", "ssim_std"}] sorted
    by value}; on_edge says the best is still the smallest or largest value tried.
    """
    if method not in REGULARISATION_PARAM:
        raise ConfigError(f"choose_lambda: method '{method}' has no regularisation weight; "
                          f"expected one of {sorted(REGULARISATION_PARAM)}")
    if len(grid) == 0:
        raise ConfigError(f"choose_lambda: the grid recon.mri.grids.{method} is empty")
    volumes = [np.asarray(v, np.float32) for v in volumes_val]
    fn, key = MRI_BASELINES[method], REGULARISATION_PARAM[method]
    ys = [simulate_kspace(v, mask, noise_std=noise_std, seed=seed + i) for i, v in enumerate(volumes)]
    stds: dict[float, float] = {}
    pbar = tqdm(desc=f"choose {key} for {method}", disable=not show_pbar)

    def score(lam: float) -> float:
        scores = [ssim_volume(fn(y, mask, **{key: float(lam)}, **kw), v) for y, v in zip(ys, volumes)]
        stds[lam] = float(np.std(scores))
        pbar.update()
        return float(np.mean(scores))

    result = tune_scalar(score, grid, max_extend=max_extend, refine=refine, name=f"{method} {key}")
    pbar.close()
    table = [{"lam": r["value"], "ssim_mean": r["score"], "ssim_std": stds[r["value"]]} for r in result["table"]]
    return {"best": result["best"], "on_edge": result["on_edge"], "table": table}
