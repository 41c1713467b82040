"""Compare generated volumes with real ones: background, intensities, slice continuity, seams.

Prints one row per set of volumes (the real test volumes first):
  * background: mean of the 4x4 corner patches of every slice (real scans: near 0);
  * histogram distance: total variation 0.5 * sum |p - q| between 64-bin intensity histograms
    on [0, 1] of this set and of the real set (0 = same distribution, 1 = disjoint);
  * slice difference: mean |x[s+1] - x[s]| over neighbouring slices;
  * seam ratio (physdiff.metrics.seams) at the boundaries of G partitions (real volumes ~1);
  * spread: the per-voxel standard deviation across the set's volumes, averaged (how much the
    volumes differ from one another; a sampler that leans on the training mean lowers it);
  * Bragg share (physdiff.metrics.lattice): the power of each volume's projection in its
    strongest 1 % of Fourier bins, averaged; about 1 for atomic columns on a lattice (4D-STEM).

The real volumes default to the run's (--results) MRI test split, or for --modality stem the
4D-STEM potentials the prior is validated on; --real names another .npy. Volumes come from .npy
files (N, S, H, W) in [0, 1] (--generated), or are sampled here from partition model files
(--models, or --G for the run's own G partition models; once per --seam mode and --mean-snr
value). With --i3d (the
Kinetics-400 checkpoint that rule fetch_i3d writes) a second table gives Table 3's FVD-i3D and
JEDi (I3D features) of every set against the real one, with table3's bootstrap intervals.

Example: python benchmarks/prior_quality.py --G 2 --seam none overlap
         python benchmarks/prior_quality.py --modality stem --G 2 --seam plateau --mean-snr 0.02
         python benchmarks/prior_quality.py --real vols.npy --models g0.pt g1.pt --generated other.npy
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from physdiff.metrics.lattice import bragg_power_share
from physdiff.metrics.seams import partition_boundaries, seam_ratio, slice_differences

BINS = np.linspace(0.0, 1.0, 65)


def background(volumes: np.ndarray, patch: int = 4) -> float:
    """Mean intensity of the four patch x patch corners of every slice."""
    p = patch
    corners = [volumes[..., :p, :p], volumes[..., :p, -p:], volumes[..., -p:, :p], volumes[..., -p:, -p:]]
    return float(np.mean([c.mean() for c in corners]))


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between the 64-bin intensity histograms of a and b on [0, 1]."""
    pa = np.histogram(np.clip(a, 0, 1), BINS)[0] / a.size
    pb = np.histogram(np.clip(b, 0, 1), BINS)[0] / b.size
    return float(0.5 * np.abs(pa - pb).sum())


def quality_row(name: str, volumes: np.ndarray, real: np.ndarray, partitions: int) -> str:
    """One markdown row of the measures above for `volumes` against `real`."""
    bounds = partition_boundaries(volumes.shape[1], partitions)
    return (f"| {name} | {len(volumes)} | {background(volumes):.4f} | {histogram_distance(volumes, real):.3f} | "
            f"{slice_differences(volumes).mean():.4f} | {seam_ratio(volumes, bounds):.2f} | {spread(volumes):.4f} | "
            f"{np.nanmean(bragg_power_share(volumes)):.3f} |")


def spread(volumes: np.ndarray) -> float:
    """Mean over voxels of the standard deviation across the volumes."""
    return float(volumes.std(axis=0).mean())


def main() -> None:
    from physdiff.models.sampling import sample_volumes
    from physdiff.models.train import load_model
    from physdiff.results import Layout

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="the run that gives the default real volumes and --G's models")
    ap.add_argument("--modality", choices=["mri", "stem"], default="mri")
    ap.add_argument("--real", default=None, help="real volumes .npy (N, S, H, W) in [0, 1] (default: see above)")
    ap.add_argument("--G", type=int, default=None, help="sample from the run's G partition models")
    ap.add_argument("--generated", nargs="*", default=[], help="generated volumes .npy files")
    ap.add_argument("--models", nargs="*", default=[], help="partition model files g = 0..G-1, to sample from")
    ap.add_argument("--seam", nargs="+", default=["none", "overlap"], help="seam modes to sample with")
    ap.add_argument("--partitions", type=int, default=None, help="G for the seam ratio (default: len(--models) or 2)")
    ap.add_argument("--mean-snr", type=float, nargs="+", default=[0.0],
                    help="reverse_diffusion's mean_snr values to sample with (0: the network's x0 at every step)")
    ap.add_argument("--n", type=int, default=8, help="volumes to sample per seam mode")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--i3d", default=None, help="i3d-kinetics-400.ckpt: also print FVD-i3D and JEDi against --real")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lay = Layout(args.results)
    args.real = args.real or (lay.mri_split("test") if args.modality == "mri" else lay.stem_prior_data("val"))
    args.models = args.models or (lay.prior_models(args.modality, args.G) if args.G else [])
    real = np.load(args.real).astype(np.float32)
    G = args.partitions or len(args.models) or 2
    print(f"G = {G}, boundaries {partition_boundaries(real.shape[1], G)} of S = {real.shape[1]}")
    print("| volumes | N | background (4x4 corners) | histogram distance to real | slice difference | seam ratio | spread "
          "| Bragg share |")
    print("|---|---|---|---|---|---|---|---|")
    print(quality_row(f"real ({args.real})", real, real, G), flush=True)
    sets = {}
    for path in args.generated:
        sets[path] = np.load(path).astype(np.float32)
        print(quality_row(path, sets[path], real, G), flush=True)
    if args.models:
        models = [load_model(p)[0] for p in args.models]
        for seam in args.seam:
            for mean_snr in args.mean_snr:
                t0 = time.perf_counter()
                vols = sample_volumes(models, args.n, real.shape[1:], seed=args.seed, steps=args.steps, eta=args.eta,
                                      seam=seam, mean_snr=mean_snr, progress=False)
                name = f"sampled, seam={seam}, mean_snr={mean_snr:g}"
                sets[name] = vols
                print(quality_row(f"{name} ({time.perf_counter() - t0:.0f} s)", vols, real, G), flush=True)
    if args.i3d:
        print_feature_distances(args.i3d, real, sets)


def print_feature_distances(checkpoint: str, real: np.ndarray, sets: dict[str, np.ndarray]) -> None:
    """Table 3's I3D distances of each set against `real`: value [95 % bootstrap interval]."""
    from physdiff.metrics.fvd import frechet_distance, jedi, score
    from physdiff.metrics.i3d import i3d_features, load_i3d

    model = load_i3d(checkpoint, device="cpu")
    real_features = i3d_features(model, real)
    print(f"\n| volumes | N | FVD-i3D | JEDi (I3D features) |  (against {len(real)} real volumes; compare at equal N only)")
    print("|---|---|---|---|")
    for name, vols in sets.items():
        features = i3d_features(model, vols)
        cells = [score(fn, real_features, features, 200, 0) for fn in (frechet_distance, jedi)]
        print(f"| {name} | {len(vols)} | " + " | ".join(f"{c.value:.1f} [{c.lo:.1f}, {c.hi:.1f}]" for c in cells) + " |",
              flush=True)


if __name__ == "__main__":
    main()
