"""DART with plain stacked partitions against seam-aware (overlap) sampling, on the MRI validation split.

    python benchmarks/studies/dart_seams.py [--results results] [--n-val 4] [--seams none overlap] [--n-samples 1]

Runs DART with the settings `tune_dart` chose for the DART tuning mask (recon.dart.mri_tune_mask),
once with `seam="none"` and once with `seam="overlap"`, on the first validation volumes measured
with that mask, and prints per setting the mean validation SSIM, the seam ratio at the
partition boundaries (`physdiff.metrics.seams`; real volumes give about 1), the ratio of the real
validation volumes, and the seconds per volume. This is the measurement behind
`recon.dart.seam`. With `--n-samples 1 4`, each seam mode also runs DART with that many chains
averaged before the final physics step (`recon.dart.n_samples`), the measurement behind that
key. Needs the default pipeline's data, tuning files and G = recon.partitions.mri partition
models.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

from physdiff.config import validate_config
from physdiff.metrics.seams import partition_boundaries, seam_ratio
from physdiff.recon.run_prior import load_partition_models, run_dart, validation_problems
from physdiff.results import Layout
from physdiff.workflow import set_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--n-val", type=int, default=4)
    parser.add_argument("--seams", nargs="+", default=["none", "overlap"], choices=["none", "overlap", "plateau"])
    parser.add_argument("--n-samples", type=int, nargs="+", default=[1], help="DART chains averaged (recon.dart.n_samples)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and BLAS threads (default: all cores); 1 when sharing the machine with other jobs")
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)
    lay = Layout(args.results)
    cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    rc = cfg["recon"]
    G, mask = rc["partitions"]["mri"], rc["dart"]["mri_tune_mask"]
    tuning = lay.tuning("mri", "dart", mask)
    settings = json.loads(tuning.read_text())["settings"]
    problems = validation_problems(args.results, cfg, "mri", args.n_val, solver_tuning=False)
    S = problems[0][1].shape[0]
    models = load_partition_models(lay.prior_models("mri", G), slices=S, size=problems[0][1].shape[1:])
    boundaries = partition_boundaries(S, G)
    truths = np.stack([truth for _, truth, _ in problems])
    print(f"{len(problems)} validation volumes {truths.shape[1:]}, mask {mask}, G = {G}, settings from {tuning}: "
          f"{settings}; real seam ratio {seam_ratio(truths, boundaries):.2f}", flush=True)
    for seam in args.seams:
        for n_samples in args.n_samples:
            start, volumes, scores = time.perf_counter(), [], []
            for i, (problem, truth, _) in enumerate(problems):
                volume, row, _ = run_dart(models, problem, truth, modality="mri",
                                          settings={**settings, "seam": seam, "n_samples": n_samples},
                                          seed=cfg["seed"] + i, progress=False)
                volumes.append(volume)
                scores.append(row["ssim"])
            seconds = (time.perf_counter() - start) / len(problems)
            print(f"seam={seam:8} chains={n_samples}  validation SSIM {np.mean(scores):.4f} ± {np.std(scores):.4f}  "
                  f"seam ratio {seam_ratio(np.stack(volumes), boundaries):.2f}  {seconds:.1f} s per volume", flush=True)


if __name__ == "__main__":
    main()
