"""Reconstruct every MRI volume of one dataset with one baseline at one mask, and score each."""

import json

import numpy as np
from tqdm.auto import tqdm

from physdiff.errors import InputError
from physdiff.io import save_json, save_npy
from physdiff.recon.run import mri_params, reconstruct_mri
from physdiff.workflow import log, run_step


def main(smk):
    wc, p = smk.wildcards, smk.params
    volumes = np.load(smk.input.volumes, mmap_mode="r")
    samples = [int(s) for s in p.samples]
    if volumes.ndim != 4 or max(samples) >= len(volumes):
        raise InputError(f"{smk.input.volumes}: expected (N, S, H, W) volumes with N > {max(samples)}, "
                         f"got shape {volumes.shape}")
    mask = np.load(smk.input.mask)
    tuned = json.loads(open(smk.input.tuning).read()) if smk.input.tuning else None
    params = mri_params(wc.method, max_iter=p.max_iter, tuned=tuned, wavelet=p.wavelet, levels=p.levels)
    results = []
    for sample in tqdm(samples, desc=f"{wc.method} {p.dataset} {wc.mask}"):
        recon, row = reconstruct_mri(np.asarray(volumes[sample]), mask, method=wc.method, params=params,
                                     noise_std=p.noise_std, seed=p.seed + sample)
        row = {"modality": "mri", "dataset": p.dataset, "sample": str(sample), "mask": wc.mask, **row}
        log.info("%s", row)
        results.append((recon, row))
    # Written only once every volume is done: a failure leaves no partial set behind.
    for (recon, row), recon_path, metrics_path in zip(results, smk.output.recon, smk.output.metrics):
        save_npy(recon_path, recon)
        save_json(metrics_path, row)


run_step(snakemake, main)  # noqa: F821
