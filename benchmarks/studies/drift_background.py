"""What 4D-STEM DRIFT's lowest-data-loss pick sees and misses: each refined candidate's data loss,
the solver's own objective (loss + L1 weight x ||V||_1), its SSIM and its total potential.

    python benchmarks/studies/drift_background.py --results R [--sample 1] [--k 20] [--top 4] [--sparsity 1e-8]

On validation sample `--sample` (the tuning rules' order) the `--top` best-scored candidates of
the run's DRIFT pool (the drift_candidates rule's) and the naive start V = 0 are
refined `--k` sweeps each by DRIFT's solver, at its baseline's tuned L1 weight or `--sparsity`.
A smooth potential is close to a constant phase, which diffraction intensities barely see, so a
candidate can fit the data best while carrying a broad background that the phase-projection
SSIM punishes; the total potential and the per-slice means show it. The last lines name the
candidate that the data loss picks (what `drift()` does) and the one the objective picks.
Reads validation data only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def slice_means(v: np.ndarray) -> str:
    return " ".join(f"{m:.1f}" for m in np.asarray(v).mean((1, 2)))


def main() -> None:
    from physdiff.config import load_config
    from physdiff.errors import InputError
    from physdiff.recon.drift import drift, physics_only
    from physdiff.recon.run_prior import score, validation_problems
    from physdiff.results import Layout
    from physdiff.workflow import set_threads

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="a run's results folder")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--sample", type=int, default=0, help="validation sample index")
    ap.add_argument("--k", type=int, default=20, help="solver sweeps per start")
    ap.add_argument("--top", type=int, default=4, help="how many best-scored candidates to refine")
    ap.add_argument("--sparsity", type=float, default=None, help="the solver's L1 weight (default: its tuned one)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_threads(args.threads)
    cfg = load_config(Path(args.config))
    problems = validation_problems(args.results, cfg, "stem", args.sample + 1, solver_tuning=True)
    if len(problems) <= args.sample:
        raise InputError(f"{args.results}: no 4D-STEM validation sample {args.sample} (found {len(problems)})")
    problem, truth, sigma = problems[args.sample]
    if args.sparsity is not None:
        problem.solver_params["sparsity"] = args.sparsity
    weight = float(problem.solver_params.get("sparsity", 0.0))
    pool = Layout(args.results).candidates("stem")
    if not pool.exists():
        raise InputError(f"{pool}: missing; run the drift_candidates rule first")
    # drift() refines the --top best-scored, keeping each refined volume and its data loss
    result = drift(problem.transform.decode(np.load(pool)), problem, n_iter=args.k, refine_top=args.top,
                   progress=True)
    starts = {f"candidate {i}": (v, loss) for i, v, loss in zip(result.refined, result.refined_volumes, result.losses)}
    twin = physics_only(problem, n_iter=args.k).volume
    starts["V = 0 (twin)"] = (twin, float(problem.loss(twin)))
    print(f"validation sample {args.sample}, {args.k} sweeps at L1 weight {weight:g}; truth: total potential "
          f"{truth.sum():.3g} V·Å, per-slice means {slice_means(truth)}")
    print("| start | data loss | objective | SSIM | total potential | per-slice means |\n|---|---|---|---|---|---|")
    objective = {}
    for name, (v, loss) in starts.items():
        objective[name] = loss + weight * float(np.abs(v).sum())
        print(f"| {name} | {loss:.4g} | {objective[name]:.4g} | {score('stem', v, truth, sigma)['ssim']:.3f} | "
              f"{v.sum():.3g} | {slice_means(v)} |", flush=True)
    refined = [n for n in starts if n.startswith("candidate")]
    print(f"lowest data loss (DRIFT's pick): candidate {result.best}")
    print(f"lowest objective: {min(refined, key=objective.get)}")


if __name__ == "__main__":
    main()
