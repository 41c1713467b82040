"""Reconstruct one 4D-STEM sample with DART, DRIFT and sparse decomposition, without the pipeline.

    python examples/reconstruct_stem.py --sample results/data/stem/test/CoPt3_001_0.npz [--out recon.npz]

`--sample` is a `.npz` in the layout `physdiff.data.stem_sim.save_sample` writes: the diffraction
intensities, the scan positions, the probe and slicing parameters, and the ground-truth
potential, which is used for scoring only. The problem is built as the pipeline builds it
(`physdiff.recon.run_prior.build_problem`). Measured data without a ground truth: build a
`physdiff.physics.multislice.MultisliceGeometry` from your probe, scan and slicing and a
`physdiff.recon.problems.STEMProblem` from your intensities directly.

DART needs the trained partition models (`--models`, default: the default run's G = 2 models)
and the potential transform stored beside their training data; DRIFT draws its candidates from
the run's pool (`--pool`). Settings come from the run's tuning files where they exist, else from
the config: DART's sampler, the solver's L1 weight and sweeps, DRIFT's K and M. The
reconstructions (potential slices in V·Å) go to `--out` as arrays named after the methods.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from physdiff.config import dart_settings, load_config, stem_problem_config
from physdiff.data.stem_sim import load_sample
from physdiff.data.transforms import load_transform
from physdiff.errors import InputError
from physdiff.io import save_npz
from physdiff.recon.dart import dart
from physdiff.recon.drift import drift, physics_only
from physdiff.recon.run_prior import build_problem, load_drift_tuning, load_partition_models, score
from physdiff.workflow import run_cli


def existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", required=True, help="a 4D-STEM sample .npz (save_sample's layout)")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--results", default="results", help="the default run's results folder (models, pool, tuning)")
    ap.add_argument("--models", nargs="+", default=None,
                    help="partition models g = 0..G-1 (default: <results>/prior/stem/G2/g{0,1}/model.pt)")
    ap.add_argument("--transform", default=None, help="the prior's potential transform (default: <results>/prior/stem/scale.json)")
    ap.add_argument("--pool", default=None, help="DRIFT's candidates (default: <results>/recon/stem/drift/candidates.npy)")
    ap.add_argument("--k", type=int, default=None, help="DRIFT's solver sweeps K (default: tuned, else 10)")
    ap.add_argument("--m", type=int, default=None, help="DRIFT's refined candidates M (default: tuned, else recon.drift.refine_top)")
    ap.add_argument("--steps", type=int, default=None, help="DART's reverse steps (default: the tuned setting)")
    ap.add_argument("--out", default="recon.npz")
    args = ap.parse_args(argv)

    cfg, res = load_config(args.config), Path(args.results)
    pcfg, tuning = stem_problem_config(cfg), res / "recon/stem/tuning"
    sample = load_sample(args.sample)
    transform = load_transform(args.transform or res / "prior/stem/scale.json")
    # the solver gets its baseline's tuned weight and sweep count where the run tuned it
    problem = build_problem("stem", pcfg, sample=sample, transform=transform,
                            solver_tuning=existing(tuning / f"{pcfg['solver']}.json"))
    recon = {}
    # the classical solver alone, with its own (tuned) sweep count
    recon[pcfg["solver"]] = problem.solve(problem.naive_start(), problem.solver_params["n_iter"])

    pool = Path(args.pool or res / "recon/stem/drift/candidates.npy")
    if not pool.is_file():
        raise InputError(f"{pool}: missing; DRIFT needs a pool of prior samples (the drift_candidates rule writes it)")
    drift_tuning = existing(tuning / "drift.json")
    k, m = load_drift_tuning(drift_tuning) if drift_tuning else (10, cfg["recon"]["drift"]["refine_top"]["stem"])
    k, m = args.k or k, args.m or m
    recon["drift"] = drift(transform.decode(np.load(pool)), problem, n_iter=k, refine_top=m).volume
    recon["drift_twin"] = physics_only(problem, n_iter=k).volume

    models = args.models or [res / f"prior/stem/G2/g{g}/model.pt" for g in range(2)]
    models = load_partition_models(models, slices=problem.shape[0], size=problem.shape[1:])
    dart_tuning = existing(tuning / "dart.json")
    settings = json.loads(dart_tuning.read_text())["settings"] if dart_tuning else dart_settings(cfg)
    settings = {**settings, **({"steps": args.steps} if args.steps else {})}
    recon["dart"] = dart(models, problem, seed=cfg["seed"], **settings).volume

    truth, sigma = np.asarray(sample["potential"], np.float32), float(sample["sigma"])
    for method, volume in recon.items():
        print(f"{method}: phase-projection SSIM {score('stem', volume, truth, sigma)['ssim']:.3f}")
    save_npz(args.out, **recon)
    print(f"wrote {args.out} ({', '.join(recon)})")


if __name__ == "__main__":
    run_cli(main)
