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
    result = choose_lambda(
        method, volumes, mask, p.grid, noise_std=p.noise_std, seed=p.seed, max_extend=p.max_extend, show_pbar=True,
        **mri_params(method, max_iter=p.max_iter, tuned=None, wavelet=p.wavelet, levels=p.levels),
    )
    best, table = result["best"], result["table"]
    log.info("%s on %s: %s = %g (validation SSIM by value: %s)", method, smk.wildcards.mask,
             REGULARISATION_PARAM[method], best, {r["lam"]: round(r["ssim_mean"], 4) for r in table})
    if result["on_edge"]:
        log.warning("%s on %s: %s = %g is still the edge of the values tried after %d extensions; "
                    "widen recon.mri.grids.%s", method, smk.wildcards.mask, REGULARISATION_PARAM[method], best,
                    p.max_extend, method)
    save_json(smk.output[0], {"method": method, "mask": smk.wildcards.mask, "param": REGULARISATION_PARAM[method],
                              "value": best, "on_edge": result["on_edge"], "n_val": len(volumes), "table": table})


run_step(snakemake, main)  # noqa: F821
