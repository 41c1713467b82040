"""4D-STEM DRIFT's candidate scores on validation samples: can the bright-field score tell candidates apart?

    python benchmarks/drift_scores_stem.py [--results results] [--n-val 2] [--candidates FILE ...]

For each candidate pool (default: the pipeline's `results/recon/stem/drift/candidates.npy`) and
each of the first --n-val validation samples (tune_drift's order), prints the bright-field SSIM
score of every candidate against the measurement (DRIFT's selection, docs/method.md, "DRIFT"), the one DRIFT
picks, the phase-projection SSIM of that start against the truth (what DRIFT's solver starts
from; V = 0 scores about 0.07) and the largest potential of the start against the truth's. A
diagnostic: it reads validation truth, never test samples, and chooses nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from physdiff.config import validate_config
from physdiff.data.plan import recon_order, stem_plan
from physdiff.recon.drift import drift
from physdiff.recon.run_prior import score, validation_problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--n-val", type=int, default=2)
    ap.add_argument("--candidates", nargs="+", default=None, help="candidate pools (prior units), default the pipeline's")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    res = Path(args.results)
    names = recon_order([r for r in stem_plan(cfg) if r["split"] == "val"])[: args.n_val]
    problems = validation_problems(res, cfg, "stem", args.n_val, solver_tuning=False)
    for path in args.candidates or [str(res / "recon/stem/drift/candidates.npy")]:
        candidates = problems[0][0].transform.decode(np.load(path))[: cfg["recon"]["drift"]["n_candidates"]["stem"]]
        print(path, flush=True)
        for (problem, truth, sigma), name in zip(problems, names):
            picked = drift(candidates, problem, n_iter=0, progress=False)
            start = score("stem", picked.volume, truth, sigma)["ssim"]
            print(f"  {name}: bright-field scores {np.round(picked.scores, 3).tolist()}, picks {picked.best}; "
                  f"start SSIM {start:.3f}; start max {picked.volume.max():.0f} V·Å, truth max {truth.max():.0f} V·Å",
                  flush=True)


if __name__ == "__main__":
    main()
