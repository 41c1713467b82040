"""Choose DRIFT's K (the solver iterations, shared with its physics-only twin) and how many of the
best-scored candidates it refines (M) on the validation split."""

import numpy as np

from physdiff.io import save_json
from physdiff.recon.run_prior import load_val_problems, tune_drift
from physdiff.workflow import log, run_step


def main(smk):
    p = smk.params
    problems = load_val_problems(p.modality, p.problem, p.n_val, val=smk.input.val, mask=smk.input.get("mask"),
                                 transform=smk.input.get("transform"), solver_tuning=smk.input.solver_tuning)
    transform = problems[0][0].transform
    candidates = transform.decode(np.load(smk.input.candidates))[: p.n_candidates]
    result = tune_drift(candidates, problems, modality=p.modality, grid=p.grid, refine_top=p.refine_top)
    log.info("DRIFT (%s): chose K = %d%s and M = %d%s of N = %d, validation SSIM %.4f", p.modality,
             result["n_iter"], " (on the edge of the values tried)" if result["on_edge"] else "",
             result["refine_top"], " (the most tried)" if result["refine_on_edge"] else "", len(candidates),
             result["score"])
    save_json(smk.output[0], {**result, "n_val": len(problems), "modality": p.modality,
                              "n_candidates": len(candidates)})


run_step(snakemake, main)  # noqa: F821
