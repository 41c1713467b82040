"""Choose DART's settings on the validation split: every combination of the grid, mean SSIM."""

import numpy as np

from physdiff.io import save_json
from physdiff.recon.run_prior import load_partition_models, load_val_problems, run_dart, tune_dart
from physdiff.workflow import log, run_step


def main(smk):
    p = smk.params
    problems = load_val_problems(p.modality, p.problem, p.n_val, val=smk.input.val, mask=smk.input.get("mask"),
                                 transform=smk.input.get("transform"), solver_tuning=smk.input.solver_tuning)
    models = load_partition_models(list(smk.input.models), slices=problems[0][1].shape[0], size=problems[0][1].shape[1:])

    def evaluate(settings):
        scores = [run_dart(models, problem, truth, modality=p.modality, settings=settings, seed=p.seed + i,
                           sigma=sigma, progress=False)[1]["ssim"]
                  for i, (problem, truth, sigma) in enumerate(problems)]
        return float(np.mean(scores))

    result = tune_dart(evaluate, p.base, p.grid)
    log.info("DART (%s): chose %s, validation SSIM %.4f over %d volumes", p.modality, result["settings"],
             result["score"], len(problems))
    save_json(smk.output[0], {**result, "n_val": len(problems), "modality": p.modality})


run_step(snakemake, main)  # noqa: F821
