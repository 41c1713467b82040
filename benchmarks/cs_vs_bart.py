"""Our CS L1-wavelet baseline against BART's `pics -l1`, both tuned on the same validation volumes.

    python benchmarks/cs_vs_bart.py [--results results] [--masks gaussian random uniform] [--accel 4] [--study]

Ours runs with the settings of config/config.yaml (wavelet, levels, iterations), BART with each
of `--bart-wavelets`, both on the pipeline's masks and volumes. Each lambda is chosen by mean
SSIM on the first --n-val validation volumes (`physdiff.recon.tuning.tune_scalar`, extended past
grid edges); the script prints the SSIMs on the first --n-test test volumes. `--study` scans our wavelet, levels and iteration count on the
validation split (the choice behind the config's defaults). Without pipeline data it falls back
on synthetic blob volumes. Needs the `bart` CLI (apt-get install bart).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from physdiff.config import load_config
from physdiff.data.masks import make_mask
from physdiff.data.phantoms import blob_volume
from physdiff.metrics.ssim import ssim_volume
from physdiff.physics.mri import simulate_kspace
from physdiff.recon.mri_baselines import cs_l1_wavelet
from physdiff.recon.tuning import tune_scalar
from physdiff.results import Layout


def write_cfl(stem: str | Path, array: np.ndarray) -> None:
    """Write BART's format: a .hdr with the dimensions, a .cfl of complex64 in column-major order."""
    array = np.asarray(array, np.complex64)
    with open(f"{stem}.hdr", "w") as f:
        f.write("# Dimensions\n" + " ".join(str(n) for n in array.shape) + "\n")
    array.ravel(order="F").tofile(f"{stem}.cfl")


def read_cfl(stem: str | Path) -> np.ndarray:
    """Read a BART .hdr/.cfl pair into a complex64 array."""
    with open(f"{stem}.hdr") as f:
        dims = [int(n) for n in f.read().splitlines()[1].split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return np.fromfile(f"{stem}.cfl", np.complex64).reshape(dims, order="F")


def bart_pics_l1(y: np.ndarray, lam: float, *, n_iter: int = 100, wavelet: str = "dau2", bart: str = "bart") -> np.ndarray:
    """`bart pics -l1 -r lam` slice by slice on centred k-space y (S, H, W), one coil of ones; |x| (S, H, W).

    BART's centred unitary FFT matches ours (tests/test_mri_baselines.py checks it on a phantom);
    `-S` rescales the result back to the input's intensity so SSIM compares like with like.
    `wavelet` is BART's `--wavelet` (haar, dau2 [its default], cdf44).
    """
    out = np.empty(y.shape, np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        write_cfl(f"{tmp}/sens", np.ones((*y.shape[1:], 1, 1), np.complex64))
        for s in range(y.shape[0]):
            write_cfl(f"{tmp}/k", y[s][:, :, None, None])
            subprocess.run([bart, "pics", "-S", "-l1", "--wavelet", wavelet, "-r", str(lam), "-i", str(n_iter),
                            f"{tmp}/k", f"{tmp}/sens", f"{tmp}/x"],
                           check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            out[s] = np.abs(read_cfl(f"{tmp}/x")).reshape(y.shape[1:])
    return out


def mean_ssim(recon, volumes, ys) -> float:
    return float(np.mean([ssim_volume(recon(y), v) for y, v in zip(ys, volumes)]))


def tuned_test_ssim(make, val, yv, test, yt, grid) -> tuple[dict, list[float]]:
    """Tune lambda on the validation volumes (mean SSIM), then score the test volumes with it."""
    tuned = tune_scalar(lambda lam: mean_ssim(make(lam), val, yv), grid, name="lambda")
    return tuned, [ssim_volume(make(tuned["best"])(y), v) for y, v in zip(yt, test)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results",
                        help="the pipeline's results folder: its validation and test volumes and masks "
                             "(a mask is made here where absent)")
    parser.add_argument("--config", default="config/config.yaml", help="our CS settings come from here")
    parser.add_argument("--masks", nargs="+", default=["gaussian", "random", "uniform"])
    parser.add_argument("--accel", type=int, default=4)
    parser.add_argument("--n-val", type=int, default=4)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--bart-wavelets", nargs="+", default=["haar", "dau2"], help="BART --wavelet values to score")
    parser.add_argument("--bart-iters", type=int, default=100)
    parser.add_argument("--study", action="store_true",
                        help="first mask only: our CS over wavelet x levels x iterations, each lambda-tuned on validation")
    args = parser.parse_args()
    if shutil.which("bart") is None:
        raise SystemExit("the bart CLI is not on PATH (apt-get install bart)")
    cfg = load_config(args.config)["recon"]["mri"]
    ours_cfg = {"wave_name": cfg["cs_wavelet"], "levels": cfg["cs_levels"], "max_iter": cfg["max_iter"]["cs_l1_wavelet"]}
    lay = Layout(args.results)
    if lay.mri_split("val").exists() and lay.mri_split("test").exists():
        val, test = (np.load(lay.mri_split(s))[:n].astype(np.float32) for s, n in (("val", args.n_val), ("test", args.n_test)))
    else:
        print(f"no validation and test volumes under {args.results}: synthetic blob volumes instead")
        val = np.stack([blob_volume(seed=100 + i) for i in range(args.n_val)])
        test = np.stack([blob_volume(seed=200 + i) for i in range(args.n_test)])
    size = test.shape[-1]
    grid = [0.001, 0.003, 0.01, 0.03]
    print(f"val {val.shape}, test {test.shape}; ours ({args.config}): {ours_cfg}, random cycle spinning; "
          f"BART pics -l1, {args.bart_iters} iterations", flush=True)
    for kind in args.masks[:1] if args.study else args.masks:
        path = lay.mri_mask(f"{kind}_R{args.accel}")
        if path.exists():
            mask = np.load(path)
        else:
            mask = make_mask(kind, shape=(size, size), acceleration=args.accel, center_fraction=0.08 if args.accel == 4 else 0.04,
                             seed=0)
            path = f"make_mask({kind!r}, seed=0)"
        yv = [simulate_kspace(v, mask, seed=i) for i, v in enumerate(val)]
        yt = [simulate_kspace(v, mask, seed=100 + i) for i, v in enumerate(test)]
        label = f"{kind}_R{args.accel} ({path})"
        if args.study:
            for wave, levels, iters in itertools.product(["haar", "db2", "db4"], [1, 2, 3, None], [30, 100]):
                settings = {"wave_name": wave, "levels": levels, "max_iter": iters}
                tuned, scores = tuned_test_ssim(lambda lam: (lambda y: cs_l1_wavelet(y, mask, lam=lam, **settings)),
                                                val, yv, test, yt, grid)
                print(f"{label} ours {settings} lambda={tuned['best']:.4g} val {tuned['score']:.4f} "
                      f"(test {np.mean(scores):.4f})", flush=True)
            continue
        runs = [("ours", lambda lam: (lambda y: cs_l1_wavelet(y, mask, lam=lam, **ours_cfg)))]
        runs += [(f"bart {w}", lambda lam, w=w: (lambda y: bart_pics_l1(y, lam, n_iter=args.bart_iters, wavelet=w)))
                 for w in args.bart_wavelets]
        for name, make in runs:
            tuned, scores = tuned_test_ssim(make, val, yv, test, yt, grid)
            print(f"{label} {name:10} lambda={tuned['best']:.4g} (val {tuned['score']:.4f}, on_edge "
                  f"{tuned['on_edge']}) test SSIM {np.mean(scores):.4f} ± {np.std(scores):.4f}", flush=True)


if __name__ == "__main__":
    main()
