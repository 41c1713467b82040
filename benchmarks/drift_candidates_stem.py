"""4D-STEM DRIFT on validation: which candidates make a better start than V = 0?

    python benchmarks/drift_candidates_stem.py [--results results] [--val 0 1 2 3] [--n 4]
                                               [--k 5 10 20 40 80] [--dose 0] [--dart-only]

For each chosen validation sample (tune_drift's order) it runs, with the tuned sparse-decomposition
solver (DRIFT's 4D-STEM solver) and one run per start, recording the phase-projection SSIM
against the truth after each K of --k:
- the physics-only twin, from V = 0;
- DRIFT with the paper's candidates: the pipeline's unconditional pool, best bright-field score;
- DRIFT with measurement-conditioned candidates: --n DART chains (the tuned DART settings, seeds
  0..n-1) on this measurement, picked by the best bright-field score (docs/method.md, "DRIFT") and, where that
  differs, by the lowest Eq. (2) data loss on the whole 4D data set.
It also prints each DART candidate's own SSIM, score and data loss, and each run's Eq. (2)
loss after the last K. With --dose the stored noiseless intensities get Poisson noise first
(seeded per sample), to see whether the prior helps where the data are noisy. A diagnostic on
validation samples only: it reads no test sample and chooses nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from physdiff.recon.run_prior import tuning_file
from physdiff.config import stem_problem_config, validate_config
from physdiff.data.plan import recon_order, stem_plan
from physdiff.data.stem_sim import load_sample
from physdiff.data.transforms import load_transform
from physdiff.recon.dart import dart
from physdiff.recon.run_prior import build_problem, load_partition_models, score
from physdiff.recon.stem_baselines import sparse_decomposition


def trace(problem, start, truth, sigma, ks) -> dict:
    """SSIM after each K in ks of one sparse-decomposition run from `start`; "loss": Eq. (2) at the last K."""
    out: dict = {}

    def callback(iteration, potential, loss):
        if iteration in ks:
            out[iteration] = score("stem", potential.float().cpu().numpy(), truth, sigma)["ssim"]
            out["loss"] = loss

    params = {**problem.solver_params, "n_iter": max(ks), "progress": False, "form": problem.form}
    sparse_decomposition(problem.intensities, problem.geometry, model=problem.model,
                         v0=torch.as_tensor(np.asarray(start, np.float32)), callback=callback, **params)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--val", type=int, nargs="+", default=[0, 1, 2, 3], help="validation sample indices")
    ap.add_argument("--n", type=int, default=4, help="DART candidates per measurement (0: none)")
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 20, 40, 80])
    ap.add_argument("--dart-only", action="store_true", help="skip the twin and the prior pool")
    ap.add_argument("--dose", type=float, default=0.0,
                    help="e/Å²: Poisson noise on the stored (noiseless) intensities; 0 keeps them")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    res = Path(args.results)
    names = recon_order([r for r in stem_plan(cfg) if r["split"] == "val"])
    indices = list(args.val)
    names = [names[i] for i in indices]
    pcfg = stem_problem_config(cfg)
    tuned_solver = res / f"recon/stem/tuning/{cfg['recon']['drift']['stem_solver']}.json"
    transform = load_transform(res / "prior/stem/scale.json")
    electrons = args.dose * cfg["stem"]["simulation"]["scan_step"] ** 2  # per probe position
    problems = []
    for i, name in zip(indices, names):
        sample = load_sample(res / f"data/stem/val/{name}.npz")
        if args.dose:  # Poisson counts over the electrons per position: the noiseless pattern on average
            # seeded by the sample's validation index, so a sample gets the same counts whatever --val lists
            counts = np.random.default_rng(i).poisson(np.clip(sample["intensities"], 0, None) * electrons)
            sample = {**sample, "intensities": (counts / electrons).astype(np.float32)}
        problems.append((build_problem("stem", pcfg, sample=sample, transform=transform, solver_tuning=str(tuned_solver)),
                         np.asarray(sample["potential"], np.float32), float(sample["sigma"])))
    G = cfg["recon"]["partitions"]["stem"]
    models = load_partition_models([str(res / f"prior/stem/G{G}/g{g}/model.pt") for g in range(G)])
    settings = json.loads((tuning_file(res, "stem", "dart")).read_text())["settings"]
    pool = problems[0][0].transform.decode(np.load(res / "recon/stem/drift/candidates.npy"))
    pool = pool[: cfg["recon"]["drift"]["n_candidates"]["stem"]]
    ks = sorted(set(args.k))
    for (problem, truth, sigma), name in zip(problems, names):
        t0 = time.perf_counter()
        rows = []
        if not args.dart_only:
            rows.append(("twin (V = 0)", trace(problem, problem.naive_start(), truth, sigma, ks)))
            prior_pick = pool[int(np.argmax([problem.score(c) for c in pool]))]
            rows.append(("DRIFT, prior pool", trace(problem, prior_pick, truth, sigma, ks)))
        cands, cand_scores, cand_ssim, cand_loss = [], [], [], []
        for seed in range(args.n):
            v = dart(models, problem, sampler=settings["sampler"], steps=settings["steps"], eta=settings["eta"],
                     correction=settings["correction"], seed=seed, seam=settings.get("seam", "none"),
                     progress=False).volume
            cands.append(v)
            cand_scores.append(problem.score(v))
            cand_ssim.append(score("stem", v, truth, sigma)["ssim"])
            cand_loss.append(problem.loss(v))
        if cands:
            best, by_loss = int(np.argmax(cand_scores)), int(np.argmin(cand_loss))
            rows.append(("DRIFT, DART candidates", trace(problem, cands[best], truth, sigma, ks)))
            if by_loss != best:
                rows.append(("DRIFT, DART, by loss", trace(problem, cands[by_loss], truth, sigma, ks)))
            print(f"{name} ({time.perf_counter() - t0:.0f} s): DART candidates SSIM {np.round(cand_ssim, 3).tolist()} "
                  f"scores {np.round(cand_scores, 3).tolist()} -> picks {best}; data loss "
                  f"{np.round(cand_loss, 4).tolist()} -> picks {by_loss}", flush=True)
        else:
            print(f"{name} ({time.perf_counter() - t0:.0f} s)", flush=True)
        for label, tr in rows:
            print(f"  {label:24s} " + "  ".join(f"K={k}: {tr.get(k, float('nan')):.3f}" for k in ks)
                  + f"  loss {tr.get('loss', float('nan')):.4g}", flush=True)


if __name__ == "__main__":
    main()
