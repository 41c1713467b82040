"""4D-STEM DRIFT's refined pick on held-out samples: tuned on validation as the pipeline tunes it,
then scored on the test and OOD samples beside the paper's pick, the twin and the sparse baseline.

    python benchmarks/studies/drift_refine.py --results results --splits test ood
    python benchmarks/studies/drift_refine.py --results R --models g0.pt g1.pt --tuning drift.json

What the tune_drift and reconstruct_drift_stem rules do, outside Snakemake and with more rows:
1. The pool: the run's DRIFT candidates where they exist, else drawn as the
   drift_candidates rule draws it (its seed, `recon.drift.n_candidates.stem` volumes, the config's
   sampler and seams) from `--models` (default: the run's G partition models) and saved there.
2. K and M: `physdiff.recon.run_prior.tune_drift` on the first `recon.n_val.stem` validation
   samples, with up to `recon.drift.refine_top.stem` refined, unless `--tuning` names a
   tune_drift file to reuse; the solver gets its baseline's tuned weight
   (the tune_stem_baseline rule's file for it, required).
3. On the first `recon.max_samples` samples of each split, as the reconstruct rules order them:
   DRIFT with the tuned K and M, DRIFT with M = 1 (the paper's pick by score: the best-scored of
   the M refined, `DRIFTResult.refined_volumes[0]`, so nothing is scored or solved twice), the physics-only
   twin (same K from V = 0) and the sparse-decomposition baseline at its own tuned iterations
   (the solver's tuning file). Phase-projection SSIM against the ground truth, per sample and
   as mean ± std, and on how many samples DRIFT beats its twin.
Runs on CUDA where there is one, else on the CPU (`--threads`); a sample takes 4-6 minutes on
this 2-core CPU (64 bright-field scores, M + 1 solves of K sweeps and the baseline's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from physdiff.config import drift_pool_seed, load_config, stem_problem_config
    from physdiff.data.plan import recon_order, stem_plan
    from physdiff.data.stem_sim import load_sample
    from physdiff.errors import InputError
    from physdiff.models.sampling import sample_volumes
    from physdiff.recon.drift import drift, physics_only
    from physdiff.recon.run_prior import (build_problem, load_drift_tuning, load_partition_models, score, tune_drift,
                                          validation_problems)
    from physdiff.results import Layout

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="a run's results folder")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--models", nargs="+", default=None, help="partition models g = 0..G-1, to draw a missing pool")
    ap.add_argument("--tuning", default=None, help="a tune_drift file (K, M) to reuse instead of tuning")
    ap.add_argument("--splits", nargs="+", choices=["test", "ood"], default=["test", "ood"])
    ap.add_argument("--n", type=int, default=None, help="samples per split (default: recon.max_samples)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON file for every row (default: none)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    lay, rc = Layout(args.results), cfg["recon"]
    n_pool, solver = rc["drift"]["n_candidates"]["stem"], rc["drift"]["stem_solver"]
    solver_tuning = lay.tuning("stem", solver)

    pool_path = lay.candidates("stem")
    if not pool_path.is_file():
        paths = args.models or lay.prior_models("stem", rc["partitions"]["stem"])
        shape = (cfg["stem"]["simulation"]["n_slices"], cfg["stem"]["simulation"]["gpts"], cfg["stem"]["simulation"]["gpts"])
        start = time.perf_counter()
        pool = sample_volumes(load_partition_models(paths, slices=shape[0], size=shape[1:]), n_pool, shape,
                              batch_size=cfg["prior"]["generate"]["batch_size"], seed=drift_pool_seed(cfg),
                              progress=False, **cfg["prior"]["sampling"])
        pool_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(pool_path, pool)
        print(f"pool of {n_pool} drawn in {time.perf_counter() - start:.0f} s -> {pool_path}", flush=True)
    problems = validation_problems(args.results, cfg, "stem", solver_tuning=True)
    transform = problems[0][0].transform
    candidates = transform.decode(np.load(pool_path))[:n_pool]
    if len(candidates) < n_pool:
        raise InputError(f"{pool_path}: {len(candidates)} candidates, recon.drift.n_candidates.stem is {n_pool}")

    if args.tuning:
        K, M = load_drift_tuning(args.tuning)
        print(f"K = {K}, M = {M} from {args.tuning}", flush=True)
    else:
        start = time.perf_counter()
        tuned = tune_drift(candidates, problems, modality="stem", grid=rc["drift"]["n_iter_grid"]["stem"],
                           refine_top=rc["drift"]["refine_top"]["stem"])
        print(f"tune_drift on {len(problems)} validation samples, {time.perf_counter() - start:.0f} s: K = "
              f"{tuned['n_iter']}, M = {tuned['refine_top']}, validation SSIM {tuned['score']:.4f}", flush=True)
        for row in tuned["table"]:
            print(f"  K = {row['n_iter']:4d}  M = {row['refine_top']}  {row['score']:.4f}", flush=True)
        K, M = tuned["n_iter"], tuned["refine_top"]
    baseline_iter = int(json.loads(solver_tuning.read_text())["n_iter"])

    plan, out = stem_plan(cfg), {"n_iter": K, "refine_top": M, "n_candidates": n_pool}
    methods = ("drift", "drift_m1", "twin", solver)
    for split in args.splits:
        names = recon_order([r for r in plan if r["split"] == split])[: args.n or rc["max_samples"]]
        rows = []
        for name in names:
            sample = load_sample(lay.stem_sample(split, name))
            problem = build_problem("stem", stem_problem_config(cfg), sample=sample, transform=transform,
                                    solver_tuning=str(solver_tuning))
            truth, sigma = np.asarray(sample["potential"], np.float32), float(sample["sigma"])
            start = time.perf_counter()
            result = drift(candidates, problem, n_iter=K, refine_top=M, progress=False)
            volumes = {"drift": result.volume, "drift_m1": result.refined_volumes[0],  # the paper's pick, refined
                       "twin": physics_only(problem, n_iter=K).volume,
                       solver: problem.solve(problem.naive_start(), baseline_iter)}
            row = {"sample": name, **{m: score("stem", v, truth, sigma)["ssim"] for m, v in volumes.items()},
                   "chosen_rank": result.refined.index(result.best)}
            rows.append(row)
            print(f"{split} {name}: " + ", ".join(f"{m} {row[m]:.4f}" for m in methods)
                  + f", chosen rank {row['chosen_rank']} ({time.perf_counter() - start:.0f} s)", flush=True)
        out[split] = rows
        print(f"\n{split} ({len(rows)} samples; DRIFT K = {K}, M = {M}, N = {n_pool}; {solver} {baseline_iter} iterations)")
        print("| method | SSIM |\n|---|---|")
        for m in methods:
            values = [r[m] for r in rows]
            print(f"| {m} | {np.mean(values):.4f} ± {np.std(values):.4f} |")
        print(f"DRIFT beats its twin on {sum(r['drift'] > r['twin'] for r in rows)} of {len(rows)}\n", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
