"""DRIFT's pool drawn with several `prior.sampling.mean_snr` values, scored on validation (or MRI test).

    python benchmarks/drift_mean_snr.py --models g0.pt g1.pt --split val --mean-snr 0 0.005 0.02
    python benchmarks/drift_mean_snr.py --models g0.pt g1.pt --split test --mean-snr 0 0.02
    python benchmarks/drift_mean_snr.py --modality stem --models s0.pt s1.pt --n 6 --k 10 --no-solver-tuning

For each value: the pool of recon.drift.n_candidates volumes that the drift_candidates rule
draws (its seed, the config's sampler and seams, this mean_snr), then DRIFT and its
physics-only twin with tune_drift's K (results/recon/mri/tuning/drift.json) and the projection
solver's tuned weight for the mask (4D-STEM: the sparse baseline's), on the first --n volumes
or samples of the split. Validation volumes are measured as tune_drift measures them, MRI test
volumes as the reconstruct rules do (noise seed = config seed + sample index). Choose on `val`;
`test` is a check after the choice. `--k` and `--no-solver-tuning` stand in for tuning files
that a partial run has not written (the config's solver weight).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def main() -> None:
    from physdiff.config import drift_pool_seed, mri_problem_config, validate_config
    from physdiff.models.sampling import sample_volumes
    from physdiff.recon.run_prior import build_problem, load_partition_models, run_drift, validation_problems

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    res, mask_name = Path(args.results), args.mask or cfg["recon"]["dart"]["mri_tune_mask"]
    solver_tuning = res / f"recon/mri/tuning/{mask_name}/{cfg['recon']['drift']['mri_solver']}.json"
    K = args.k or json.loads((res / f"recon/{args.modality}/tuning/drift.json").read_text())["n_iter"]
    if args.split == "val":
        problems = validation_problems(res, cfg, args.modality, args.n, solver_tuning=not args.no_solver_tuning)
    else:
        volumes = np.load(res / "data/mri/brats/test.npy")[: args.n]
        mask = np.load(res / f"data/mri/masks/{mask_name}.npy")
        problems = [(build_problem("mri", mri_problem_config(cfg), volume=v, mask=mask, seed=cfg["seed"] + i,
                                   solver_tuning=None if args.no_solver_tuning else str(solver_tuning)),
                     np.asarray(v, np.float32), None) for i, v in enumerate(volumes)]
    shape = problems[0][1].shape
    models = load_partition_models(args.models, slices=shape[0], size=shape[1:])
    n_pool = cfg["recon"]["drift"]["n_candidates"]
    what = mask_name if args.modality == "mri" else "4D-STEM"
    print(f"{args.split}: {len(problems)} volumes or samples, {what}, pool of {n_pool}, K = {K}", flush=True)
    twin = None
    for mean_snr in args.mean_snr:
        start = time.perf_counter()
        pool = sample_volumes(models, n_pool, tuple(shape), batch_size=cfg["prior"]["generate"]["batch_size"],
                              seed=drift_pool_seed(cfg), progress=False,
                              **{**cfg["prior"]["sampling"], "mean_snr": mean_snr})
        drift, twin_now = [], []
        for problem, truth, sigma in problems:
            candidates = problem.transform.decode(pool)  # the prior's [0, 1] to data units, as reconstruct_drift
            _, rows, _ = run_drift(candidates, problem, truth, modality=args.modality, n_iter=K, sigma=sigma,
                                   progress=False)
            drift.append(rows[0]["ssim"])
            twin_now.append(rows[1]["ssim"])
        twin = twin or twin_now  # the twin does not use the pool
        print(f"mean_snr {mean_snr:g}: DRIFT {np.mean(drift):.4f} ± {np.std(drift):.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"physics-only twin: {np.mean(twin):.4f} ± {np.std(twin):.4f}")


if __name__ == "__main__":
    main()
