"""Time and score the classical MRI baselines (docs/method.md, "Baselines") on undersampled test volumes.

Usage:
    python benchmarks/mri_baselines.py                         # synthetic blob phantoms (as in the tests)
    python benchmarks/mri_baselines.py --data vols.npy --accel 4 8 --mask uniform random
    python benchmarks/mri_baselines.py --data vols.npy --n-val 2   # choose weights on the first 2 volumes

Masks: full phase-encode rows, every R-th ('uniform') or N/R drawn at random ('random'), plus a
centred band of round(c N) rows (c = 0.08 at R = 4, 0.04 at R = 8, docs/method.md, "MRI"). Prints one row per
method: seconds per volume, mean ± std of the volume SSIM (mean of per-slice SSIMs), mean PSNR.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from physdiff.data.phantoms import blob_volume
from physdiff.metrics.ssim import psnr_volume, ssim_volume
from physdiff.physics.mri import simulate_kspace
from physdiff.recon.mri_baselines import MRI_BASELINES, REGULARISATION_PARAM, choose_lambda

CENTRE_FRACTION = {4: 0.08, 8: 0.04}
GRIDS = {"cs_l1_wavelet": [1e-3, 3e-3, 1e-2, 3e-2], "tv": [3e-3, 1e-2, 3e-2, 1e-1],
         "projection": [3e-3, 1e-2, 3e-2]}


def row_mask(kind: str, size: int, accel: int, centre_fraction: float, seed: int = 0) -> np.ndarray:
    """(size, size) bool mask of full rows: every R-th or size//R random ones, plus the centre band."""
    lines = np.zeros(size, bool)
    if kind == "uniform":
        lines[::accel] = True
    elif kind == "random":
        lines[np.random.default_rng(seed).choice(size, size // accel, replace=False)] = True
    else:
        raise SystemExit(f"--mask: unknown mask type '{kind}'; expected uniform or random")
    n_centre = max(1, round(centre_fraction * size))
    lines[size // 2 - n_centre // 2: size // 2 - n_centre // 2 + n_centre] = True
    return np.broadcast_to(lines[:, None], (size, size)).copy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="(N, S, H, W) float32 .npy in [0, 1]; default: synthetic blob phantoms")
    ap.add_argument("--n-volumes", type=int, default=4, help="synthetic volumes to build (without --data)")
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--accel", type=int, nargs="+", default=[4], help="accelerations R")
    ap.add_argument("--mask", nargs="+", default=["uniform", "random"], help="mask types")
    ap.add_argument("--noise-std", type=float, default=0.0, help="k-space noise std, image units")
    ap.add_argument("--lam-cs", type=float, default=3e-3)
    ap.add_argument("--lam-tv", type=float, default=3e-2)
    ap.add_argument("--thresh", type=float, default=1e-2, help="projection-based wavelet threshold")
    ap.add_argument("--n-val", type=int, default=0, help="choose the weights on the first N volumes (grid search)")
    args = ap.parse_args()

    if args.data:
        volumes = np.load(args.data).astype(np.float32)
        if volumes.ndim != 4:
            raise SystemExit(f"--data {args.data}: expected an (N, S, H, W) array, got shape {volumes.shape}")
    else:
        volumes = np.stack([blob_volume(args.slices, args.size, seed=100 + i) for i in range(args.n_volumes + args.n_val)])
    val, test = volumes[: args.n_val], volumes[args.n_val:]
    size = volumes.shape[-1]
    if volumes.shape[-2] != size:
        raise SystemExit(f"this benchmark builds square masks; got slices of {volumes.shape[-2:]}")
    print(f"{len(test)} test volumes of shape {test.shape[1:]}" + (f", {len(val)} for choosing weights" if len(val) else ""))

    header = f"{'R':>2} {'mask':8} {'method':14} {'weight':>8} {'s/volume':>9} {'SSIM':>15} {'PSNR dB':>8}"
    print(header + "\n" + "-" * len(header))
    for accel in args.accel:
        for kind in args.mask:
            mask = row_mask(kind, size, accel, CENTRE_FRACTION.get(accel, 0.04))
            params = {"zero_filled": {}, "cs_l1_wavelet": {"lam": args.lam_cs}, "tv": {"lam": args.lam_tv},
                      "projection": {"wavelet_thresh": args.thresh}}
            if len(val):
                for name, grid in GRIDS.items():
                    tuned = choose_lambda(name, val, mask, grid, noise_std=args.noise_std)
                    params[name] = {REGULARISATION_PARAM[name]: tuned["best"]}
            ys = [simulate_kspace(v, mask, noise_std=args.noise_std, seed=i) for i, v in enumerate(test)]
            for name, fn in MRI_BASELINES.items():
                fn(ys[0][:1], mask, **params[name])  # warm-up: sigpy compiles numba kernels on first use
                t0 = time.perf_counter()
                recs = [fn(y, mask, **params[name]) for y in ys]
                dt = (time.perf_counter() - t0) / len(ys)
                ssim = [ssim_volume(r, v) for r, v in zip(recs, test)]
                psnr = np.mean([psnr_volume(r, v) for r, v in zip(recs, test)])
                weight = f"{next(iter(params[name].values())):.0e}" if params[name] else "-"
                print(f"{accel:>2} {kind:8} {name:14} {weight:>8} {dt:9.2f} "
                      f"{np.mean(ssim):7.3f} ± {np.std(ssim):5.3f} {psnr:8.2f}")


if __name__ == "__main__":
    main()
