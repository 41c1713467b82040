"""Reconstruct one 4D-STEM sample's potential with one baseline and score its phase projection."""

import json

import torch

from physdiff.data.stem_sim import load_sample
from physdiff.io import save_json, save_npy
from physdiff.recon.run import reconstruct_stem, stem_params
from physdiff.workflow import log, run_step


def main(smk):
    wc = smk.wildcards
    sample = load_sample(smk.input.sample)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with open(smk.input.tuning) as f:
        params = stem_params(wc.method, dict(smk.params.settings), json.load(f))
    if device == "cpu":
        params["num_threads"] = smk.threads
    potential, row = reconstruct_stem(sample, method=wc.method, params=params, loss=smk.params.loss, device=device)
    row.pop("param_num_threads", None)
    dataset = "cubic" if wc.split == "test" else "hexagonal"
    row = {"modality": "stem", "dataset": dataset, "sample": wc.sample, "mask": "full", "crystal": str(sample["name"]), **row}
    if row["diverged"]:
        log.warning("%s diverged on %s after %d iterations; scoring its best iterate", wc.method, wc.sample, row["iterations"])
    log.info("%s", row)
    save_npy(smk.output.recon, potential)
    save_json(smk.output.metrics, row)


run_step(snakemake, main)  # noqa: F821
