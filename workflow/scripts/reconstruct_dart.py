"""Reconstruct one test volume (MRI) or sample (4D-STEM) with DART, using the settings tuned on validation."""

import json

from physdiff.io import save_csv_rows, save_json, save_npy
from physdiff.recon.run_prior import load_partition_models, load_test_problem, run_dart
from physdiff.workflow import log, run_step


def main(smk):
    p = smk.params
    problem, truth, sigma, ids = load_test_problem(smk.input, smk.wildcards, p.modality, p.problem)
    settings = json.loads(open(smk.input.tuning).read())["settings"]
    models = load_partition_models(list(smk.input.models), slices=truth.shape[0], size=truth.shape[1:])
    volume, row, steps = run_dart(models, problem, truth, modality=p.modality, settings=settings, seed=p.seed,
                                  sigma=sigma)
    row = {"modality": p.modality, **ids, **row}
    log.info("%s", row)
    save_npy(smk.output.recon, volume)
    save_json(smk.output.metrics, row)
    save_csv_rows(smk.output.steps, steps)


run_step(snakemake, main)  # noqa: F821
