"""Choose an MRI baseline's regularisation weight on the validation split (grid, mean SSIM)."""

import numpy as np

from physdiff.io import save_json
from physdiff.recon.mri_baselines import REGULARISATION_PARAM, choose_lambda
from physdiff.recon.run import mri_params
from physdiff.workflow import log, run_step


def main(smk):
    p, method = smk.params, smk.wildcards.method
    volumes = np.load(smk.input.val)[: p.n_val]
    mask = np.load(smk.input.mask)
    best, table = choose_lambda(
        method, volumes, mask, p.grid, noise_std=p.noise_std, seed=p.seed, show_pbar=True,
        **mri_params(method, max_iter=p.max_iter, tuned=None, wavelet=p.wavelet),
    )
    log.info("%s on %s: %s = %g (validation SSIM by value: %s)", method, smk.wildcards.mask,
             REGULARISATION_PARAM[method], best, {r["lam"]: round(r["ssim_mean"], 4) for r in table})
    save_json(smk.output[0], {"method": method, "mask": smk.wildcards.mask, "param": REGULARISATION_PARAM[method],
                              "value": best, "n_val": len(volumes), "table": table})


run_step(snakemake, main)  # noqa: F821
