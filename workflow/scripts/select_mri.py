"""DART, self-validated: choose per scan between plain DART, adapted DART and CS by the error of
each one's reconstruction from the kept lines on the held-out lines (no ground truth), and
write the chosen reconstruction with a metrics row that records every candidate's figures."""

import json

import numpy as np

from physdiff.io import save_json, save_npy
from physdiff.recon.mri_baselines import MRI_BASELINES
from physdiff.recon.run import mri_params
from physdiff.recon.run_prior import load_test_problem
from physdiff.recon.select import choose, heldout_errors
from physdiff.workflow import log, run_step


def main(smk):
    p, wc = smk.params, smk.wildcards
    problem, truth, _, ids = load_test_problem("mri", p.problem, dict(wc.items()), volumes=smk.input.volumes,
                                               mask=smk.input.mask, solver_tuning=smk.input.solver_tuning)
    seed = p.seed + int(wc.sample)  # the split the DART jobs held out (their volume seed)
    kept, held = problem.split_lines(p.heldout, seed=seed)
    tuned = json.loads(open(smk.input.cs_tuning).read())
    params = mri_params("cs_l1_wavelet", max_iter=p.max_iter, tuned=tuned, wavelet=p.wavelet, levels=p.levels)
    from_kept = dict(zip([m for m in p.methods if m.startswith("dart")], (np.load(f) for f in smk.input.kept)))
    from_kept["cs_l1_wavelet"] = MRI_BASELINES["cs_l1_wavelet"](kept.y, kept.mask, **params)
    errors = heldout_errors(from_kept, problem.y, held, problem.mask)
    chosen = choose(errors[p.weighting])
    rows = {m: json.loads(open(f).read()) for m, f in zip(p.methods, smk.input.metrics)}
    recon = np.load(list(smk.input.recons)[list(p.methods).index(chosen)])
    best = max(rows, key=lambda m: rows[m]["ssim"])
    row = {"modality": "mri", **ids, "method": "dart_selfval", "ssim": rows[chosen]["ssim"],
           "psnr": rows[chosen]["psnr"], "chosen": chosen, "best_by_ssim": best, "agrees": chosen == best,
           "weighting": p.weighting, "wall_s": sum(rows[m]["wall_s"] for m in rows), "diverged": rows[chosen]["diverged"],
           **{f"ssim_{m}": rows[m]["ssim"] for m in rows},
           **{f"heldout_{w}_{m}": e for w in errors for m, e in errors[w].items()}}
    log.info("%s", row)
    save_npy(smk.output.recon, recon)
    save_json(smk.output.metrics, row)


run_step(snakemake, main)  # noqa: F821
