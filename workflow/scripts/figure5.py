"""Figure 5: time and SSIM against reverse steps (vanilla, DART, DRIFT) and cost per device against G."""

import json

import numpy as np

from physdiff.io import atomic_path
from physdiff.models.train import load_checkpoint
from physdiff.plots.figure5 import figure5_frame, plot_figure5
from physdiff.recon.run_prior import build_problem, load_drift_tuning, load_partition_models
from physdiff.recon.sweep import cost_per_device, model_memory_per_device, steps_sweep
from physdiff.workflow import log, run_step


def main(smk):
    p, fig5 = smk.params, smk.params.figure5
    volumes = np.load(smk.input.volumes)[: fig5["n_volumes"]]
    mask = np.load(smk.input.mask)
    # measured exactly as the reconstruct rules measure test volume i (seed + i)
    problems = [(build_problem("mri", p.problem, volume=v, mask=mask, seed=p.seed + i,
                               solver_tuning=smk.input.solver_tuning), np.asarray(v, np.float32))
                for i, v in enumerate(volumes)]
    paths, train, models = list(smk.input.models), list(smk.input.train_benchmarks), {}
    train_by_g, seconds_by_g, paths_by_g, start = {}, {}, {}, 0
    for G in p.partitions:
        paths_by_g[G] = paths[start:start + G]
        models[G] = load_partition_models(paths_by_g[G], slices=volumes.shape[1])
        train_by_g[G] = train[start:start + G]
        # the whole training time, resumed runs included (None in model files from before it was recorded)
        seconds_by_g[G] = [load_checkpoint(path).get("train_seconds") for path in paths[start:start + G]]
        start += G
    dart_settings = json.load(open(smk.input.dart_tuning))["settings"]
    drift_iter, drift_refine_top = load_drift_tuning(smk.input.drift_tuning)
    log.info("Figure 5: %d volumes, mask %s, steps %s, G %s, DART %s, DRIFT K=%d, M=%d, N=%d", len(problems), p.mask,
             fig5["steps"], list(p.partitions), dart_settings, drift_iter, drift_refine_top, fig5["n_candidates"])
    sweep = steps_sweep(models, problems, steps=fig5["steps"], sampling=p.sampling, dart_settings=dart_settings,
                        drift_iter=drift_iter, n_candidates=fig5["n_candidates"], seed=p.seed,
                        drift_refine_top=drift_refine_top)
    model_mb = model_memory_per_device(paths_by_g, slices=volumes.shape[1], train_batch=p.train_batch,
                                       sample_batch=p.generate["batch_size"])
    cost = cost_per_device(train_by_g, dict(zip(p.partitions, smk.input.generate_benchmarks)),
                           p.generate["n_volumes"], train_seconds=seconds_by_g, model_mb=model_mb)
    frame = figure5_frame(sweep, cost)
    log.info("\n%s", frame.to_string())
    with atomic_path(smk.output.csv) as tmp:
        frame.to_csv(tmp, index=False)
    fig = plot_figure5(frame)
    with atomic_path(smk.output.png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=p.dpi)


run_step(snakemake, main)  # noqa: F821
