"""Choose a 4D-STEM baseline's step size or sparsity weight, and its iteration count, on validation samples."""

import torch

from physdiff.data.stem_sim import load_sample
from physdiff.io import save_json
from physdiff.recon.run import tune_stem_baseline
from physdiff.workflow import log, run_step


def main(smk):
    p, method = smk.params, smk.wildcards.method
    samples = [load_sample(path) for path in smk.input]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = dict(p.settings)
    if device == "cpu":
        settings["num_threads"] = smk.threads
    result = tune_stem_baseline(samples, method=method, grid=p.grid, max_iter=p.max_iter, settings=settings,
                                loss=p.loss, max_extend=p.max_extend, refine=p.refine, device=device)
    log.info("%s: %s = %g, n_iter = %d (validation SSIM %.4f; by value: %s)", method, result["param"],
             result["value"], result["n_iter"], result["ssim_mean"],
             {r["value"]: (round(r["ssim_mean"], 4), r["n_iter"]) for r in result["table"]})
    if result["on_edge"]:
        log.warning("%s: %s = %g is still the edge of the values tried; widen recon.stem.tuning.grids.%s",
                    method, result["param"], result["value"], method)
    if result["n_iter_on_edge"]:
        log.warning("%s: the best iteration count is still the cap itself (%d, after doubling it); raise "
                    "recon.stem.tuning.max_iter.%s or max_extend", method, result["n_iter"], method)
    save_json(smk.output[0], {**result, "n_val": len(samples), "samples": [str(s) for s in smk.input]})


run_step(snakemake, main)  # noqa: F821
