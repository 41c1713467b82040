"""Choose DRIFT's K (the solver iterations, shared with its physics-only twin) on the validation split."""

import numpy as np

from physdiff.io import save_json
from physdiff.recon.drift import drift
from physdiff.recon.run_prior import load_val_problems, score, tune_drift_iterations
from physdiff.workflow import log, run_step


def main(smk):
    p = smk.params
    problems = load_val_problems(smk.input, p.modality, p.problem, p.n_val)
    transform = problems[0][0].transform
    candidates = transform.decode(np.load(smk.input.candidates))[: p.n_candidates]

    def evaluate(n_iter):
        return float(np.mean([score(p.modality, drift(candidates, problem, n_iter=n_iter, progress=False).volume,
                                    truth, sigma)["ssim"] for problem, truth, sigma in problems]))

    result = tune_drift_iterations(evaluate, p.grid)
    log.info("DRIFT (%s): chose K = %d, validation SSIM %.4f%s", p.modality, result["best"], result["score"],
             " (on the edge of the values tried)" if result["on_edge"] else "")
    save_json(smk.output[0], {"n_iter": result["best"], "score": result["score"], "on_edge": result["on_edge"],
                              "table": result["table"], "n_val": len(problems), "modality": p.modality})


run_step(snakemake, main)  # noqa: F821
