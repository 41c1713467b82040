"""Reconstruct your own MRI volume with DART and the classical baselines, without the pipeline.

    python examples/reconstruct_mri.py --nifti my_flair.nii.gz [--mask gaussian --R 4] [--out recon.npz]
    python examples/reconstruct_mri.py --kspace y.npy --mask-file mask.npy [--out recon.npz]

With `--nifti`, a 3D volume (axial slices along the last axis) is preprocessed as the pipeline
does (the `mri.n_slices` slices with the most brain, cropped, resized to `mri.size`, scaled to
[0, 1]), measured with a seeded line mask and the config's noise, and every reconstruction is
scored against it. With `--kspace`, your own measured complex k-space (S, H, W; k = 0 at index
W // 2 along the phase-encode axis W, as `physdiff.physics.mri.fft2c` lays it out) and its
boolean mask are reconstructed as they are, and nothing is scored.

DART needs the trained partition models (`--models`, default: the default run's G = 2 models)
and uses the settings tune_dart chose where the run wrote them; CS and TV use the weights tuned
for the mask where they exist (else `--lam`). Models trained on several contrasts
(`mri.train_contrasts`) draw `--contrast` (default FLAIR; `any` for a scan of another
contrast). Everything runs on the CPU or, where there is one,
CUDA. The reconstructions go to `--out` as arrays named after the methods.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from physdiff.recon.run_prior import tuning_file
from physdiff.config import center_fraction, dart_settings, load_config
from physdiff.data.masks import make_mask
from physdiff.data.mri_prep import preprocess_volume
from physdiff.data.nifti import load_volume
from physdiff.errors import InputError
from physdiff.io import save_npz
from physdiff.physics.mri import check_mask, simulate_kspace
from physdiff.recon.dart import dart
from physdiff.recon.mri_baselines import MRI_BASELINES
from physdiff.recon.problems import MRIProblem
from physdiff.recon.run import mri_params
from physdiff.recon.run_prior import load_partition_models, score
from physdiff.workflow import run_cli


def tuned(path: Path) -> dict | None:
    """A tuning file the default run wrote, or None where it did not run."""
    return json.loads(path.read_text()) if path.is_file() else None


def measurement(args, cfg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """(k-space y, mask, ground truth or None, mask name) from --nifti or --kspace."""
    if args.kspace:
        if not args.mask_file:
            raise InputError("--kspace needs --mask-file: the boolean (H, W) or (S, H, W) mask it was sampled with")
        y = np.load(args.kspace)
        mask = check_mask(np.load(args.mask_file), y.shape[1:] if y.ndim == 3 else None, name=args.mask_file)
        return y, mask, None, Path(args.mask_file).stem
    mri = cfg["mri"]
    truth = preprocess_volume(load_volume(args.nifti), n_slices=mri["n_slices"], size=mri["size"],
                              margin=mri["crop_margin"])
    mask = make_mask(args.mask, shape=tuple(mri["size"]), acceleration=args.R,
                     center_fraction=center_fraction(cfg, args.R), seed=cfg["seed"])
    y = simulate_kspace(truth, mask, noise_std=cfg["recon"]["mri"]["noise_std"], seed=cfg["seed"])
    return y, mask, truth, f"{args.mask}_R{args.R}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--nifti", help="a 3D .nii/.nii.gz volume to measure and reconstruct")
    source.add_argument("--kspace", help="your measured complex k-space, an (S, H, W) .npy")
    ap.add_argument("--mask-file", help="with --kspace: its boolean sampling mask, a .npy")
    ap.add_argument("--mask", default="gaussian", choices=["uniform", "gaussian", "random"])
    ap.add_argument("--R", type=int, default=4, help="acceleration")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--results", default="results", help="the default run's results folder (models, tuning)")
    ap.add_argument("--models", nargs="+", default=None,
                    help="partition models g = 0..G-1 (default: <results>/prior/mri/G2/g{0,1}/model.pt)")
    ap.add_argument("--lam", type=float, default=1.7e-4, help="CS and TV weight where no tuning file exists")
    ap.add_argument("--steps", type=int, default=None, help="DART's reverse steps (default: the tuned setting)")
    ap.add_argument("--contrast", default=None,
                    help="with models trained on several mri.train_contrasts: the contrast DART draws "
                         "(flair, t1, t2, or any: every contrast together, for a scan of another one); default flair")
    ap.add_argument("--out", default="recon.npz")
    args = ap.parse_args(argv)

    cfg, res = load_config(args.config), Path(args.results)
    y, mask, truth, mask_name = measurement(args, cfg)
    rc = cfg["recon"]["mri"]
    recon = {"zero_filled": MRI_BASELINES["zero_filled"](y, mask)}
    for method in ("cs_l1_wavelet", "tv"):
        weight = tuned(res / f"recon/mri/tuning/{mask_name}/{method}.json") or {"param": "lam", "value": args.lam}
        params = mri_params(method, max_iter=rc["max_iter"][method], tuned=weight, wavelet=rc["cs_wavelet"],
                            levels=rc["cs_levels"])
        recon[method] = MRI_BASELINES[method](y, mask, **params)

    models = args.models or [res / f"prior/mri/G2/g{g}/model.pt" for g in range(2)]
    models = load_partition_models(models, slices=y.shape[0], size=y.shape[1:], contrast=args.contrast)
    settings = (tuned(tuning_file(res, "mri", "dart")) or {"settings": dart_settings(cfg)})["settings"]
    settings = {**settings, **({"steps": args.steps} if args.steps else {})}
    # hard data consistency (Eq. 4): DART's measured k-space lines equal y
    problem = MRIProblem(y, mask, lam=cfg["recon"]["dart"]["mri_lambda"])
    recon["dart"] = dart(models, problem, seed=cfg["seed"], **settings).volume

    for method, volume in recon.items():
        print(f"{method}: SSIM {score('mri', volume, truth)['ssim']:.3f}" if truth is not None else method)
    save_npz(args.out, **recon)
    print(f"wrote {args.out} ({', '.join(recon)})")


if __name__ == "__main__":
    run_cli(main)
