"""Reconstruct one MRI test volume with one baseline and score it."""

import json

import numpy as np

from physdiff.io import save_json, save_npy
from physdiff.recon.run import mri_params, reconstruct_mri
from physdiff.workflow import log, run_step


def main(smk):
    wc, p = smk.wildcards, smk.params
    volume = np.load(smk.input.volumes, mmap_mode="r")[int(wc.sample)]
    mask = np.load(smk.input.mask)
    tuned = json.loads(open(smk.input.tuning).read()) if smk.input.tuning else None
    recon, row = reconstruct_mri(
        np.asarray(volume), mask, method=wc.method, params=mri_params(wc.method, max_iter=p.max_iter, tuned=tuned, wavelet=p.wavelet, levels=p.levels),
        noise_std=p.noise_std, seed=p.seed + int(wc.sample),
    )
    row = {"modality": "mri", "dataset": wc.dataset, "sample": wc.sample, "mask": wc.mask, **row}
    log.info("%s", row)
    save_npy(smk.output.recon, recon)
    save_json(smk.output.metrics, row)


run_step(snakemake, main)  # noqa: F821
