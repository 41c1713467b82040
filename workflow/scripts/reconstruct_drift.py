"""Reconstruct one test volume or sample with DRIFT and with its physics-only twin (same solver, same K)."""

import numpy as np

from physdiff.io import save_csv_rows, save_json, save_npy
from physdiff.recon.run_prior import load_drift_tuning, load_test_problem, run_drift
from physdiff.workflow import log, run_step


def main(smk):
    p = smk.params
    files = smk.input
    problem, truth, sigma, ids = load_test_problem(
        p.modality, p.problem, dict(smk.wildcards.items()), volumes=files.get("volumes"), mask=files.get("mask"),
        sample=files.get("sample"), transform=files.get("transform"), solver_tuning=files.solver_tuning)
    n_iter, refine_top = load_drift_tuning(smk.input.tuning)
    candidates = problem.transform.decode(np.load(smk.input.candidates))[: p.n_candidates]
    volumes, rows, table = run_drift(candidates, problem, truth, modality=p.modality, n_iter=n_iter,
                                     refine_top=refine_top, sigma=sigma)
    for row in rows:
        row = {"modality": p.modality, **ids, **row}
        log.info("%s", row)
        save_json(smk.output[f"{row['method']}_metrics"], row)
        save_npy(smk.output[f"{row['method']}_recon"], volumes[row["method"]])
    save_csv_rows(smk.output.scores, table)


run_step(snakemake, main)  # noqa: F821
