"""DART against the tuned classical baselines on real MRI volumes that ship inside installed packages.

    python benchmarks/real_mri.py [--results results] [--mask gaussian_R4] [--volumes PATH ...] [--models g0.pt g1.pt]
    python benchmarks/real_mri.py --roots [--n 6]          # the run's prepared OOD roots
    python benchmarks/real_mri.py --val 4                  # its first 4 validation volumes

The prior never sees these scans: they are preprocessed exactly as the pipeline's volumes
(`physdiff.data.mri_prep.preprocess_volume`: the central slab of mri.n_slices axial slices,
cropped with the configured margin, resized to mri.size, scaled to [0, 1]), measured with the
pipeline's mask and reconstructed with DART (G = recon.partitions.mri models, the settings
tune_dart chose) and with zero-filled, CS and TV at the weights tuned for that mask. Default
volumes: nibabel's `tests/data/anatomical.nii` (a T1 head, 2 mm, a 66 x 82 x 50 mm field of view
inside the head: no background, unlike every training volume), nilearn's 1 mm ICBM152 2009 T1
template (an average of 152 T1 scans; the synthetic generator warps its tissue maps, so its
anatomy is the generator's and only its contrast is new) and the first volume of nibabel's
`tests/data/example4d.nii.gz` (a real subject's 2 mm echo-planar fMRI volume, T2*-weighted: CSF
bright; an anatomy and a contrast the prior never saw). None is FLAIR, so this measures
robustness to contrast as much as to anatomy. It chooses nothing; it reads no test volume.
`--models` scores other partition model files (g = 0..G-1) than the pipeline's; `--contrast`
the contrasts that contrast-conditional models (mri.train_contrasts) draw, a DART row each;
`--synthetic t1` the synthetic validation subjects drawn in T1 (or t2) contrast instead. Each
score is SSIM, with the volume's PSNR in dB after it. `--holdout F` adds a check that needs no ground
truth: every method reconstructs again from the measured lines less a seeded fraction F of those
outside the centre band (`physdiff.data.masks.holdout_lines`) and is scored by its normalised
error on the held-out lines, ||M_h (F x - y)||^2 / ||M_h y||^2 ("held-out NMSE"). `--array` takes
volumes the pipeline has already prepared, (N, S, H, W) in [0, 1], `--roots` the run's OOD roots
(the same measurement, seeds and methods as the reconstruct rules, with the default `--mask`),
and `--n` the first N of them; `--val N` the pipeline's first N validation volumes, measured with the seeds tune_dart
uses (seed + 100000 + i). The last line gives each method's mean SSIM.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from physdiff.config import center_fraction, mri_problem_config, validate_config
from physdiff.data.masks import holdout_lines
from physdiff.data.mri_prep import preprocess_volume
from physdiff.data.nifti import load_volume
from physdiff.metrics.ssim import psnr_volume, ssim_volume
from physdiff.physics.mri import simulate_kspace
from physdiff.recon.problems import MRIProblem
from physdiff.recon.mri_baselines import MRI_BASELINES
from physdiff.recon.run import mri_params
from physdiff.recon.adapt import AdaptSettings
from physdiff.recon.run_prior import load_partition_models, run_dart
from physdiff.recon.select import choose, heldout_error, heldout_errors
from physdiff.results import Layout
from physdiff.workflow import set_threads


def packaged_volumes() -> dict[str, np.ndarray]:
    """The real MRI volumes that nibabel and nilearn install with their packages, as (x, y, z) arrays."""
    import nibabel
    from nilearn import datasets

    data = Path(nibabel.__file__).parent / "tests" / "data"
    epi = nibabel.load(data / "example4d.nii.gz").get_fdata(dtype=np.float32)[..., 0]  # first of its 2 volumes
    return {"nibabel anatomical.nii": load_volume(data / "anatomical.nii"),
            "nilearn ICBM152 T1": datasets.load_mni152_template(resolution=1).get_fdata(dtype=np.float32),
            "nibabel example4d EPI": epi}


def prepared_volumes(path: str, n: int | None, cfg: dict) -> dict[str, np.ndarray]:
    """The first n volumes of an (N, S, H, W) array the pipeline prepared, checked against the config's size."""
    from physdiff.errors import InputError
    from physdiff.metrics.table3 import load_volumes

    volumes = load_volumes(path)  # names the file if unreadable, not 4-D or not finite
    size = cfg["mri"]["size"]
    expected = (cfg["mri"]["n_slices"], *(size if isinstance(size, (list, tuple)) else (size, size)))
    if tuple(volumes.shape[1:]) != expected:
        raise InputError(f"{path}: expected volumes (N, {', '.join(map(str, expected))}), got {volumes.shape}")
    return {f"{Path(path).name}[{i}]": v.astype(np.float32) for i, v in enumerate(volumes[:n])}


def synthetic_validation(lay: Layout, cfg: dict, contrast: str) -> dict[str, np.ndarray]:
    """The synthetic validation subjects (the run's split of subjects) drawn in
    `contrast` ("t1", "t2"; the generator's other contrasts) and preprocessed as the pipeline does."""
    from physdiff.data.flair import subject_seeds, synth_flair_subject

    mri = cfg["mri"]
    if mri["source"] != "synthetic":
        raise SystemExit("--synthetic needs mri.source: synthetic")
    seeds = subject_seeds(cfg["seed"], mri["n_subjects"])
    ids = json.loads(lay.mri_subjects().read_text())["val"]
    return {f"{i} {contrast}": preprocess_volume(
        synth_flair_subject(seeds[int(i.rsplit("_", 1)[1]) - 1], shape=tuple(mri["volume_shape"]),
                            contrasts=("flair", contrast)).others[contrast],
        n_slices=mri["n_slices"], size=mri["size"], margin=mri["crop_margin"]) for i in ids}


def partition_models(lay: Layout, cfg: dict, paths: list[str] | None = None, contrast: str | None = None) -> tuple[int, list]:
    """(G, models): the given partition model files, or the pipeline's G = recon.partitions.mri ones,
    drawing `contrast` where they are contrast-conditional."""
    G = len(paths) if paths else cfg["recon"]["partitions"]["mri"]
    paths = paths or lay.prior_models("mri", G)
    return G, load_partition_models(paths, slices=cfg["mri"]["n_slices"], size=cfg["mri"]["size"], contrast=contrast)


def baseline(method: str, y: np.ndarray, mask: np.ndarray, *, lay: Layout, mask_name: str, cfg: dict) -> np.ndarray:
    """A classical baseline's reconstruction at the weight tune_mri_baseline chose for the mask `mask_name`."""
    rc = cfg["recon"]["mri"]
    tuned = None if method == "zero_filled" else json.loads(lay.tuning("mri", method, mask_name).read_text())
    params = mri_params(method, max_iter=rc["max_iter"].get(method), tuned=tuned, wavelet=rc["cs_wavelet"],
                        levels=rc["cs_levels"])
    return MRI_BASELINES[method](y, mask, **params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results", help="a finished default run's results folder")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--mask", default="gaussian_R4")
    parser.add_argument("--volumes", nargs="*", default=[], help="NIfTI files to use instead of the packaged ones")
    parser.add_argument("--array", default=None,
                        help="an (N, S, H, W) .npy of prepared volumes instead")
    parser.add_argument("--roots", action="store_true", help="instead: the run's prepared OOD roots (as --array)")
    parser.add_argument("--n", type=int, default=None, help="with --array: only the first N volumes")
    parser.add_argument("--val", type=int, default=None, metavar="N",
                        help="instead: the run's first N validation volumes, measured as tune_dart does")
    parser.add_argument("--synthetic", choices=["t1", "t2"], default=None,
                        help="instead: the synthetic validation subjects drawn in this contrast (the generator's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and BLAS threads (default: all cores); 1 when sharing the machine with other jobs")
    parser.add_argument("--dart-override", default="{}",
                        help='JSON of DART settings that replace the tuned ones, e.g. \'{"eta": 0.0}\'')
    parser.add_argument("--contrast", nargs="+", default=[None],
                        help="with contrast-conditional models (mri.train_contrasts): the contrasts DART draws, "
                             "a row each (names, or 'any': every contrast together); default their first, FLAIR")
    parser.add_argument("--holdout", type=float, default=None, metavar="F",
                        help="also score each method by its error on a seeded fraction F of the measured lines "
                             "outside the centre band, reconstructed without them (no ground truth needed)")
    parser.add_argument("--adapt", action="append", default=[], metavar="JSON",
                        help='also DART with per-scan adaptation (recon.dart.adapt settings, e.g. \'{"rank": 4}\'; '
                             "'{}' for the defaults), a row each; repeat for several")
    parser.add_argument("--no-dart", action="store_true", help="leave out plain DART (with --adapt)")
    parser.add_argument("--selfval", action="store_true",
                        help="with --adapt: also the self-validated choice among DART, adapted DART and CS, by each "
                             "held-out weighting (physdiff.recon.select), with the split of the first --adapt")
    parser.add_argument("--models", nargs="*", default=None,
                        help="partition model files g = 0..G-1 (default: the run's G = recon.partitions.mri models)")
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)
    lay = Layout(args.results)
    cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    if args.roots:
        args.array = str(lay.roots())
    rc, mri = cfg["recon"], cfg["mri"]
    prepared = args.array or args.synthetic or args.val  # volumes already preprocessed, measured with seed + i
    offset = 100_000 if args.val else 0  # validation volumes: the seeds load_val_problems measures them with
    if args.val:
        volumes = prepared_volumes(str(lay.mri_split("val")), args.val, cfg)
    elif args.synthetic:
        volumes = synthetic_validation(lay, cfg, args.synthetic)
    else:
        volumes = prepared_volumes(args.array, args.n, cfg) if args.array else (
            {Path(p).name: load_volume(p) for p in args.volumes} if args.volumes else packaged_volumes())
    mask = np.load(lay.mri_mask(args.mask))
    sets = {c: partition_models(lay, cfg, args.models, c) for c in args.contrast}
    G = next(iter(sets.values()))[0]
    settings = {**json.loads(lay.tuning("mri", "dart", args.mask).read_text())["settings"],
                **json.loads(args.dart_override)}
    problem_cfg = mri_problem_config(cfg)
    adapts = [json.loads(a) for a in args.adapt]
    if args.selfval and not adapts:
        raise SystemExit("--selfval chooses among DART, adapted DART and CS: give --adapt too")
    selfval_fraction = AdaptSettings.from_dict(adapts[0]).holdout if args.selfval else None
    choices: dict[str, list[str]] = {}
    stops: dict[str, list[int]] = {}
    print(f"mask {args.mask}, DART G = {G} with {settings}" + "".join(f"; adapt{j} {a}" for j, a in enumerate(adapts)),
          flush=True)
    table: dict[str, list[float]] = {}
    if args.holdout:  # checked before any reconstruction
        rate = args.mask.rsplit("_R", 1)[-1]
        if "_R" not in args.mask or not rate.isdigit():
            raise SystemExit(f"--holdout needs a mask named <kind>_R<rate>, got {args.mask}")
        holdout_centre = center_fraction(cfg, int(rate))
    for i, (name, raw) in enumerate(volumes.items()):
        seed = cfg["seed"] + (offset + i if prepared else 0)  # prepared volume i: as the reconstruct rules measure it
        truth = raw if prepared else preprocess_volume(raw, n_slices=mri["n_slices"], size=mri["size"],
                                                         margin=mri["crop_margin"])
        y = simulate_kspace(truth, mask, noise_std=rc["mri"]["noise_std"], seed=seed)

        def reconstruct(y_: np.ndarray, mask_: np.ndarray) -> dict[str, np.ndarray]:
            out = {m: baseline(m, y_, mask_, lay=lay, mask_name=args.mask, cfg=cfg)
                   for m in ("zero_filled", "cs_l1_wavelet", "tv")}
            problem = MRIProblem(y_, mask_, lam=problem_cfg["lam"])
            for contrast, (_, models) in sets.items():
                name = "dart" if contrast is None else f"dart[{contrast}]"
                if not args.no_dart:
                    kept_out[name] = {}
                    out[name] = run_dart(models, problem, truth, modality="mri", settings=settings, seed=seed,
                                         progress=False, heldout=selfval_fraction, kept_out=kept_out[name])[0]
                for j, adapt in enumerate(adapts):
                    key = f"{name}+adapt{j if len(adapts) > 1 else ''}"
                    kept_out[key] = {}
                    out[key], row, _ = run_dart(models, problem, truth, modality="mri", settings=settings, seed=seed,
                                                progress=False, adapt=adapt, kept_out=kept_out[key])
                    stops.setdefault(key, []).append(row["adapt_stop"])
            return out

        kept_out: dict[str, dict] = {}
        recons = reconstruct(y, mask)
        if selfval_fraction:  # the ground-truth-free choice among DART, adapted DART and CS
            full = MRIProblem(y, mask, lam=problem_cfg["lam"])
            sub, held = full.split_lines(selfval_fraction, seed=seed)
            from_kept = {k: v["volume"] for k, v in kept_out.items() if v}
            from_kept["cs_l1_wavelet"] = baseline("cs_l1_wavelet", sub.y, sub.mask, lay=lay, mask_name=args.mask, cfg=cfg)
            for w, errors in heldout_errors(from_kept, y, held, mask).items():
                pick = choose(errors)
                choices.setdefault(w, []).append(pick)
                recons[f"selfval[{w}]"] = recons[pick]
                print(f"  held-out ({w}): " + ", ".join(f"{k} {v:.4f}" for k, v in errors.items()) + f" -> {pick}")
        scores = {k: ssim_volume(x, truth) for k, x in recons.items()}
        line = ", ".join(f"{k} {scores[k]:.3f} ({psnr_volume(x, truth):.2f} dB)" for k, x in recons.items())
        if args.holdout:
            kept, held = holdout_lines(mask, args.holdout, center_fraction=holdout_centre, seed=seed)
            errors = {k: heldout_error(x, y, held) for k, x in reconstruct(y * kept, kept).items()}
            line += "; held-out NMSE " + ", ".join(f"{k} {v:.3f}" for k, v in errors.items())
        print(f"{name} {tuple(raw.shape)} -> {truth.shape}: {line}", flush=True)
        for k, v in scores.items():
            table.setdefault(k, []).append(v)
    for w, picks in choices.items():
        print(f"self-validated ({w}) chose: {picks}")
    for key, values in stops.items():
        print(f"{key}: held-out stop after {values} fits")
    print(f"mean SSIM over {len(volumes)}: " + ", ".join(f"{k} {np.mean(v):.3f} ± {np.std(v):.3f}" for k, v in table.items()))


if __name__ == "__main__":
    main()
