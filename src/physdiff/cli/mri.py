"""`physdiff mri`: reconstruct a slab of an MRI scan, or your own k-space, with DART, DRIFT or a baseline."""

from __future__ import annotations

import argparse
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from physdiff.cli.common import (Formatter, Stopwatch, add_common, beside, check_output, check_slices,
                                 dart_settings_of, drift_candidates, drift_k_m, load_npy, median_value, note,
                                 partition_models, resolve_config, tuned, write_outputs)
from physdiff.errors import ConfigError, InputError
from physdiff.results import Layout

DESCRIPTION = """\
Reconstruct a slab of a 3D MRI scan from undersampled k-space, with a trained prior (DART, DRIFT)
or a classical baseline.

From a scan (NIfTI, axial slices along its third axis): the slab of S = mri.n_slices consecutive
slices (--slab, --slices) is prepared as the pipeline prepares its volumes: with --grid prior it
is cropped around the head with the mri.crop_margin background and resized to mri.size; with
--grid native it stays on the scan's in-plane grid (baselines only). It is scaled to [0, 1] by
the 99.5th percentile of its foreground, its k-space is measured with a line mask (--mask, --R:
the run's own mask file where --results holds it, else drawn as the pipeline draws it) and the
config's recon.mri.noise_std, reconstructed, and scored against the fully sampled slab.

From your own k-space (--kspace y.npy --mask-file m.npy): complex (S, H, W) with k = 0 at the
centre of each slice (fftshifted, orthonormal: physdiff.physics.mri.fft2c) and its boolean mask,
(H, W) or (S, H, W), True where a line was measured. Nothing is scored.

Output: --out, a NIfTI of the reconstruction with axes (x, y, slice), in the slab's [0, 1] units.
Its affine is the scan's, shifted by the slab's offset (its first slice is the scan's slice
that the summary line names) and, with --grid prior, composed with the in-plane crop and resize,
so a viewer overlays it on the scan. From --kspace it is 1 mm isotropic, centred on the origin.
A PNG of a few slices goes beside it (recon.nii.gz -> recon.png), with the fully sampled and
zero-filled slab when there is a scan. Both are written only once everything has succeeded.

Methods: dart (DART with the run's recon.partitions.mri trained partition models), dart_adapt
(DART adapting the prior to the scan: recon.dart.adapt), drift (the run's pool of prior samples,
scored and refined by recon.drift.mri_solver), and the baselines cs (L1-wavelet compressed
sensing), tv, projection and zero_filled. The prior methods read the run's models and tuned
settings from --results; where a tuning file is missing they use the config's settings and say
so. Baselines need no results folder: they use the weight tuned for the mask where the run has
one, else the middle value of the config's recon.mri.grids.
"""

EPILOG = """\
examples:
  physdiff mri scan.nii.gz --out recon.nii.gz                  # DART, Gaussian mask, R = 4
  physdiff mri scan.nii.gz --out cs.nii.gz --method cs --mask uniform --R 8
  physdiff mri scan.nii.gz --out tv.nii.gz --method tv --grid native --slab center
  physdiff mri --kspace y.npy --mask-file mask.npy --out recon.nii.gz --results results
"""

METHODS = {"dart": "dart", "dart_adapt": "dart_adapt", "drift": "drift", "cs": "cs_l1_wavelet",
           "cs_l1_wavelet": "cs_l1_wavelet", "tv": "tv", "projection": "projection", "zero_filled": "zero_filled"}
PRIOR_METHODS = ("dart", "dart_adapt", "drift")


@dataclass
class Measurement:
    """What is reconstructed: k-space y (S, H, W), its mask, the name its tuned settings go by, the
    fully sampled slab (None for your own k-space), and where the slab sits in the world (affine)."""

    y: np.ndarray
    mask: np.ndarray
    mask_name: str
    truth: np.ndarray | None
    affine: np.ndarray
    units: tuple[str, str]
    first_slice: int = 0


def add_parser(sub) -> None:
    p = sub.add_parser("mri", help="reconstruct a slab of an MRI scan, or your own k-space",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter)
    p.add_argument("scan", nargs="?", help="a 3D NIfTI scan (.nii or .nii.gz), axial slices along its third axis")
    p.add_argument("--out", required=True, help="the reconstruction, .nii.gz or .nii (a .png goes beside it)")
    p.add_argument("--method", default="dart", choices=list(METHODS), help="reconstruction method")
    p.add_argument("--mask", default="gaussian", choices=["gaussian", "uniform", "random"],
                   help="with a scan: the kind of line mask its k-space is measured with")
    p.add_argument("--R", type=int, default=4, help="with a scan: the mask's acceleration")
    p.add_argument("--kspace", help="instead of a scan: your complex k-space, an (S, H, W) .npy")
    p.add_argument("--mask-file", help="with --kspace: its boolean mask, an (H, W) or (S, H, W) .npy")
    p.add_argument("--slab", default="auto",
                   help="which slices of the scan: auto (the S consecutive slices with the most foreground, as "
                        "the pipeline picks them), center, or the index of the first slice")
    p.add_argument("--slices", type=int, default=None,
                   help="S, slices in the slab (default: the config's mri.n_slices, which the prior methods need)")
    p.add_argument("--grid", default="prior", choices=["prior", "native"],
                   help="prior: crop and resize the slab to mri.size, as the models were trained; native: keep "
                        "the scan's in-plane grid (baselines only)")
    p.add_argument("--tuning-mask", default=None,
                   help="the mask whose tuned settings to use (default: <mask>_R<R>, or the --mask-file's name)")
    p.add_argument("--contrast", default=None,
                   help="with models trained on several mri.train_contrasts: the contrast DART draws "
                        "(flair, t1, t2, or any); default their first, flair")
    p.add_argument("--seed", type=int, default=None, help="seed of the noise and of DART (default: the config's seed)")
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    clock = Stopwatch()
    cfg, _ = resolve_config(args.config)
    method, lay = METHODS[args.method], Layout(args.results)
    out = check_output(args.out, (".nii.gz", ".nii"))
    seed = cfg["seed"] if args.seed is None else args.seed
    if args.kspace and args.scan:
        raise InputError("give a scan to measure or --kspace, not both")
    if args.kspace:
        case = own_kspace(args)
    elif args.scan:
        if args.grid == "native" and method in PRIOR_METHODS:
            raise InputError(f"--grid native keeps the scan's own grid; {method} needs the mri.size grid its models "
                             "were trained on: use --grid prior")
        case = measure_scan(args, cfg, lay, seed)
    else:
        raise InputError("give a NIfTI scan to measure, or --kspace y.npy --mask-file mask.npy")
    S, H, W = case.y.shape
    print(f"mask {case.mask_name}: {acceleration(case.mask):.2f}x fewer lines; reconstructing {S} x {H} x {W} "
          f"with {method}", flush=True)
    volume = reconstruct(method, case, cfg, lay, seed=seed, contrast=args.contrast)
    if not np.all(np.isfinite(volume)):
        raise InputError(f"{method} diverged on this measurement (NaN or infinite values); nothing written")
    from physdiff.physics.mri import zero_filled

    rows = {method: volume}
    if case.truth is not None:
        from physdiff.recon.run_prior import score

        s, zf = score("mri", volume, case.truth), score("mri", zero_filled(case.y, case.mask), case.truth)
        print(f"{method}: SSIM {s['ssim']:.3f}, PSNR {s['psnr']:.1f} dB against the fully sampled slab "
              f"(zero-filled: SSIM {zf['ssim']:.3f})")
        rows = {"fully sampled": case.truth, "zero-filled": zero_filled(case.y, case.mask), method: volume}
    png = beside(out, ".png", strip=(".nii.gz", ".nii"))
    write_outputs([(out, ".nii.gz" if out.name.endswith(".gz") else ".nii", nifti_writer(volume, case)),
                   (png, ".png", png_writer(rows, f"{method}, mask {case.mask_name}", case.first_slice))])
    print(f"wrote {out} ({H} x {W} x {S}) and {png} in {clock}")


def acceleration(mask: np.ndarray) -> float:
    return float(mask.size / max(int(np.count_nonzero(mask)), 1))


def own_kspace(args) -> Measurement:
    from physdiff.data.nifti import centred_affine
    from physdiff.physics.mri import check_mask

    if not args.mask_file:
        raise InputError("--kspace needs --mask-file: the boolean (H, W) or (S, H, W) mask it was sampled with")
    y = load_npy(args.kspace, "complex k-space (S, H, W)")
    if y.ndim != 3 or not np.iscomplexobj(y):
        raise InputError(f"{args.kspace}: expected complex k-space (S, H, W), got {y.dtype} {y.shape}")
    mask = check_mask(load_npy(args.mask_file, "a boolean mask"), y.shape, name=str(args.mask_file))
    name = args.tuning_mask or Path(args.mask_file).name.removesuffix(".npy")
    return Measurement(y.astype(np.complex64), mask, name, None, centred_affine(y.shape[1:] + y.shape[:1]),
                       ("mm", "unknown"))


def slab_start(choice: str, volume: np.ndarray, n: int, path: str) -> int:
    """The scan's first slice of the slab: auto (most foreground), center, or an index."""
    from physdiff.data.mri_prep import slab_start as most_foreground

    depth = volume.shape[2]
    if n > depth:
        raise InputError(f"{path}: {depth} slices along the third axis; the slab needs {n} (--slices, mri.n_slices)")
    if choice == "auto":
        return most_foreground(volume, n)
    if choice == "center":
        return (depth - n) // 2
    if not choice.lstrip("-").isdigit() or not 0 <= int(choice) <= depth - n:
        raise InputError(f"--slab {choice}: expected auto, center or a first slice in 0..{depth - n} "
                         f"({path} has {depth} slices, the slab {n})")
    return int(choice)


def measure_scan(args, cfg: dict, lay: Layout, seed: int) -> Measurement:
    """The slab of the scan, prepared as the pipeline prepares volumes, and its measured k-space."""
    import nibabel as nib

    from physdiff.data.mri_prep import crop_box, crop_resize, scale01
    from physdiff.data.nifti import load_volume
    from physdiff.physics.mri import simulate_kspace

    mri = cfg["mri"]
    n = args.slices or mri["n_slices"]
    volume = load_volume(args.scan)
    start = slab_start(args.slab, volume, n, args.scan)
    slab = np.moveaxis(volume, 2, 0)[start:start + n]
    index = np.eye(4)  # the output's voxel (i, j, k) -> the scan's voxel
    index[2, 3] = start
    where = f"slices {start}-{start + n - 1} of {volume.shape[2]} ({args.slab})"
    if args.grid == "prior":
        size = tuple(int(s) for s in mri["size"])
        x0, x1, y0, y1 = crop_box(slab, size=size, margin=mri["crop_margin"])
        truth = scale01(crop_resize(slab, size=size, margin=mri["crop_margin"]))
        # skimage's resize maps pixel centres: output i sits at input x0 + (i + 1/2) s - 1/2
        for axis, (lo, hi) in enumerate(((x0, x1), (y0, y1))):
            s = (hi - lo) / size[axis]
            index[axis, axis], index[axis, 3] = s, lo + (s - 1) / 2
        where += f", cropped to x {x0}..{x1 - 1}, y {y0}..{y1 - 1} and resized to {size[0]} x {size[1]}"
    else:
        truth = scale01(slab)
    print(f"{args.scan}: {where}", flush=True)
    mask, name = scan_mask(args.mask, args.R, truth.shape, cfg, lay)
    y = simulate_kspace(truth, mask, noise_std=cfg["recon"]["mri"]["noise_std"], seed=seed)
    image = nib.load(args.scan)
    units = tuple(u or "unknown" for u in image.header.get_xyzt_units()) if hasattr(image.header, "get_xyzt_units") \
        else ("mm", "unknown")
    return Measurement(y, mask, args.tuning_mask or name, truth, image.affine @ index, units, start)


def scan_mask(kind: str, R: int, shape: tuple[int, int, int], cfg: dict, lay: Layout) -> tuple[np.ndarray, str]:
    """The run's mask `<kind>_R<R>` where it fits the slab, else one drawn as the make_mask rule draws it."""
    from physdiff.data.masks import make_mask

    name, (S, H, W) = f"{kind}_R{R}", shape
    path = lay.mri_mask(name)
    if path.is_file():
        mask = load_npy(path, "a boolean mask")
        if mask.shape[-2:] == (H, W) and (mask.ndim == 2 or mask.shape[0] == S):
            print(f"mask {name}: the run's own, {path}")
            return mask.astype(bool), name
        note(f"{path} is {mask.shape}, not a mask of {H} x {W} slices; drawing {name} afresh")
    table = {str(k): float(v) for k, v in cfg["mri"]["masks"]["center_fraction"].items()}
    if str(R) not in table:
        raise ConfigError(f"--R {R}: mri.masks.center_fraction has no entry for R = {R} (it has R = "
                          f"{', '.join(sorted(table))}); add one to the config")
    # the make_mask rule's seed: the config's seed and the mask's name
    mask = make_mask(kind, shape=(H, W), acceleration=R, center_fraction=table[str(R)],
                     seed=[cfg["seed"], zlib.crc32(name.encode())],
                     n_slices=S if cfg["mri"]["masks"]["per_slice"] else None)
    return mask, name


def reconstruct(method: str, case: Measurement, cfg: dict, lay: Layout, *, seed: int,
                contrast: str | None) -> np.ndarray:
    """The reconstruction (S, H, W) of one measurement with one method."""
    from physdiff.config import adapt_settings, mri_problem_config
    from physdiff.recon.dart import dart
    from physdiff.recon.mri_baselines import MRI_BASELINES, REGULARISATION_PARAM
    from physdiff.recon.run import mri_params
    from physdiff.recon.run_prior import build_problem, dart_options

    rc, mask_name = cfg["recon"], case.mask_name
    if method in MRI_BASELINES:
        weight = None
        if method != "zero_filled":
            weight = tuned(lay.tuning("mri", method, mask=mask_name), f"{method}'s weight",
                           f"the middle of recon.mri.grids.{method}", keys=("param", "value")) or \
                {"param": REGULARISATION_PARAM[method], "value": median_value(rc["mri"]["grids"][method])}
        params = mri_params(method, max_iter=rc["mri"]["max_iter"].get(method), tuned=weight,
                            wavelet=rc["mri"]["cs_wavelet"], levels=rc["mri"]["cs_levels"])
        return MRI_BASELINES[method](case.y, case.mask, **params)
    problem_cfg = mri_problem_config(cfg)
    if method == "drift":
        return run_drift(case, cfg, lay, problem_cfg)
    G = rc["partitions"]["mri"]
    paths = lay.prior_models("mri", G)
    models = partition_models(paths, modality="mri", G=G, slices=case.y.shape[0], size=case.y.shape[1:],
                              contrast=contrast)
    check_slices(models, paths, case.y.shape[0], "--slices, mri.n_slices")
    settings = dart_settings_of(lay, "mri", cfg, mask=mask_name)
    adapt = adapt_settings(cfg) if method == "dart_adapt" else None
    problem = build_problem("mri", problem_cfg, kspace=case.y, mask=case.mask)
    return dart(models, problem, adapt=adapt, progress=False, **dart_options(settings, seed)).volume


def run_drift(case: Measurement, cfg: dict, lay: Layout, problem_cfg: dict) -> np.ndarray:
    """DRIFT from the run's candidate pool, with its tuned K and M and its solver's tuned weight."""
    from physdiff.recon.drift import drift
    from physdiff.recon.run_prior import build_problem

    solver = problem_cfg["solver"]
    solver_file = lay.tuning("mri", solver, mask=case.mask_name)
    if not tuned(solver_file, f"DRIFT's solver ({solver}) weight", f"the {solver} defaults", keys=("param", "value")):
        solver_file = None
    problem = build_problem("mri", problem_cfg, kspace=case.y, mask=case.mask,
                            solver_tuning=str(solver_file) if solver_file else None)
    k, m = drift_k_m(lay, "mri", cfg, mask=case.mask_name)
    candidates = drift_candidates(lay, "mri", case.y.shape, cfg)
    return drift(candidates, problem, n_iter=k, refine_top=m, progress=False).volume


def nifti_writer(volume: np.ndarray, case: Measurement):
    """write(tmp): the (S, H, W) reconstruction as a NIfTI (x, y, slice) with the slab's affine."""
    import nibabel as nib

    data = np.ascontiguousarray(np.moveaxis(np.asarray(volume, np.float32), 0, -1))

    def write(tmp: Path) -> None:
        image = nib.Nifti1Image(data, case.affine)
        image.header.set_xyzt_units(*case.units)
        nib.save(image, str(tmp))

    return write


def png_writer(rows: dict[str, np.ndarray], title: str, first_slice: int):
    from physdiff.plots.command import mri_slices_figure

    def write(tmp: Path) -> None:
        import matplotlib.pyplot as plt

        fig = mri_slices_figure(rows, title=title, first_slice=first_slice)
        fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)

    return write
