"""DRIFT's pool drawn with several `prior.sampling.mean_snr` values, scored on validation (or MRI test).

    python benchmarks/studies/drift_mean_snr.py --models g0.pt g1.pt --split val --mean-snr 0 0.005 0.02
    python benchmarks/studies/drift_mean_snr.py --models g0.pt g1.pt --split test --mean-snr 0 0.02
    python benchmarks/studies/drift_mean_snr.py --modality stem --models s0.pt s1.pt --n 6 --k 10 --no-solver-tuning

For each value: the pool of recon.drift.n_candidates volumes that the drift_candidates rule
draws (its seed, the config's sampler and seams, this mean_snr), then DRIFT and its
physics-only twin with tune_drift's K and M (for the mask) and the projection
solver's tuned weight for the mask (4D-STEM: the sparse baseline's), on the first --n volumes
or samples of the split. Validation volumes are measured as tune_drift measures them, MRI test
volumes as the reconstruct rules do (noise seed = config seed + sample index). Choose on `val`;
`test` is a check after the choice. `--k` and `--no-solver-tuning` stand in for tuning files
that a partial run has not written (the config's solver weight).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for prior_compute
from prior_compute import drift_pool, drift_ssims  # noqa: E402


def main() -> None:
    from physdiff.config import mri_problem_config, validate_config
    from physdiff.recon.run_prior import load_drift_tuning, load_partition_models, load_test_problem, validation_problems
    from physdiff.results import Layout

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modality", choices=["mri", "stem"], default="mri")
    ap.add_argument("--models", nargs="+", required=True, help="partition model files g = 0..G-1")
    ap.add_argument("--split", choices=["val", "test"], default="val")
    ap.add_argument("--mean-snr", type=float, nargs="+", default=[0.0, 0.02])
    ap.add_argument("--n", type=int, default=None, help="volumes of the split (default: recon.n_val.mri for val, all for test)")
    ap.add_argument("--mask", default=None, help="mask name for test (default: recon.dart.mri_tune_mask, as validation)")
    ap.add_argument("--results", default="results")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=None, help="DRIFT's K (default: tune_drift's choice)")
    ap.add_argument("--no-solver-tuning", action="store_true", help="the config's solver weight, not the tuned one")
    args = ap.parse_args()
    if args.modality == "stem" and args.split == "test":
        raise SystemExit("--split test is for MRI only; 4D-STEM is scored on validation samples")
    torch.set_num_threads(args.threads)
    cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    lay, mask_name = Layout(args.results), args.mask or cfg["recon"]["dart"]["mri_tune_mask"]
    K, M = load_drift_tuning(lay.tuning(args.modality, "drift", mask_name))
    K = args.k or K
    if args.split == "val":
        problems = validation_problems(args.results, cfg, args.modality, args.n, solver_tuning=not args.no_solver_tuning)
    else:  # as the reconstruct_drift_mri rule reads and measures test sample i
        volumes = lay.mri_split("test")
        solver = None if args.no_solver_tuning else lay.tuning("mri", cfg["recon"]["drift"]["mri_solver"], mask_name)
        n = len(np.load(volumes, mmap_mode="r")) if args.n is None else args.n
        problems = [load_test_problem("mri", mri_problem_config(cfg), {"dataset": "brats", "sample": str(i), "mask": mask_name},
                                      volumes=volumes, mask=lay.mri_mask(mask_name), solver_tuning=solver)[:3]
                    for i in range(n)]
    shape = problems[0][1].shape
    models = load_partition_models(args.models, slices=shape[0], size=shape[1:])
    what = mask_name if args.modality == "mri" else "4D-STEM"
    print(f"{args.split}: {len(problems)} volumes or samples, {what}, pool of "
          f"{cfg['recon']['drift']['n_candidates'][args.modality]}, K = {K}, M = {M}", flush=True)
    twin = []
    for mean_snr in args.mean_snr:
        start = time.perf_counter()
        pool = drift_pool(cfg, args.modality, models, shape, mean_snr=mean_snr)
        drift, twins = drift_ssims(pool, problems, args.modality, K, refine_top=M, twin=not twin)  # the twin does not use the pool
        twin = twin or twins
        print(f"mean_snr {mean_snr:g}: DRIFT {np.mean(drift):.4f} ± {np.std(drift):.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"physics-only twin: {np.mean(twin):.4f} ± {np.std(twin):.4f}")

if __name__ == "__main__":
    main()
