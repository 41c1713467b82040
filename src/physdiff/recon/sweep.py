"""Figure 5's measurements: time and SSIM against reverse steps, and cost per device against G.

`steps_sweep` runs, for every partition count G and every number of reverse steps K, on the same
measured MRI volumes:
- "vanilla": the unconditional partitioned prior, one volume sampled with K steps. Its time is
  the mean sampling time of one volume (over the N candidates below). Its SSIM is that sample's against the truth, with no measurement
  used at all (the first DRIFT candidate, i.e. DRIFT's best-of-1 without scoring): a floor,
  not a reconstruction.
- "dart": DART with the validation-tuned settings, its steps set to K.
- "drift": a pool of N candidates sampled with K steps (one volume at a time, so each has a
  time), scored against the measurement, the best refined with the tuned K_solver iterations.
  Its time is the pool's sampling time plus scoring and refinement: the pool is shared by all
  measurements in the pipeline, so this is the cost of reconstructing one volume from scratch.
Peak memory per device is read from CUDA's allocator (the largest of the partitions' devices)
and left empty on the CPU, where `cost_per_device` takes it from the rules' benchmark files.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from physdiff.errors import ConfigError, InputError
from physdiff.metrics.ssim import ssim_volume
from physdiff.models.memory import measure_in_subprocess
from physdiff.models.sampling import partition_bounds, partition_devices, reverse_diffusion
from physdiff.recon.drift import drift
from physdiff.recon.run import reset_peak_memory
from physdiff.recon.run_prior import run_dart

log = logging.getLogger(__name__)

METHODS = ("vanilla", "dart", "drift")


def _reset_peaks(devices) -> None:
    for dev in devices:
        reset_peak_memory(dev)


def _peak_mb(devices) -> float:
    """The largest CUDA peak allocation over the partitions' devices, in MiB; NaN on the CPU."""
    cuda = [d for d in devices if d.type == "cuda"]
    return max(torch.cuda.max_memory_allocated(d) / 2**20 for d in cuda) if cuda else float("nan")


def steps_sweep(models_by_g: Mapping[int, Sequence[Callable]], problems: Sequence[tuple], *, steps: Sequence[int],
                sampling: Mapping, dart_settings: Mapping, drift_iter: int, n_candidates: int, seed: int = 0,
                drift_refine_top: int = 1, devices_by_g: Mapping[int, Sequence] | None = None) -> pd.DataFrame:
    """One row per (method, G, steps, volume): seconds, ssim, peak_mem_mb (per device), device.

    `problems` holds (problem, truth) pairs of MRI-like problems (`shape`, `transform`, `score`,
    `solve`, `data_step`); `sampling` gives the unconditional sampler and eta (as prior.sampling);
    `dart_settings` are the tuned DART settings, whose steps the sweep replaces; `drift_iter` and
    `drift_refine_top` are DRIFT's tuned K and M.
    """
    if not problems:
        raise InputError("Figure 5: no measured volumes to reconstruct")
    if n_candidates < 1 or drift_iter < 0 or not steps:
        raise ConfigError(f"figures.figure5: need steps, n_candidates >= 1 and K >= 0; got {list(steps)}, "
                          f"{n_candidates}, {drift_iter}")
    shape = tuple(problems[0][0].shape)
    # further sampling options (such as how slabs meet) go to the sampler as the generate rule passes them
    extra = {key: v for key, v in sampling.items() if key not in ("sampler", "steps", "eta")}
    rows = []
    for G, models in sorted(models_by_g.items()):
        devices = partition_devices(len(models), (devices_by_g or {}).get(G))
        device = ",".join(sorted({str(d) for d in devices}))
        for k in steps:
            _reset_peaks(devices)
            pool, times = [], []
            for i in range(n_candidates):
                start = time.perf_counter()
                unit = reverse_diffusion(models, (1, *shape), sampler=sampling["sampler"], steps=int(k),
                                         eta=sampling.get("eta", 1.0), seed=seed + 7919 + i, devices=devices,
                                         progress=False, **extra)
                times.append(time.perf_counter() - start)
                pool.append(unit[0].numpy())
            sample_peak = _peak_mb(devices)
            pool = np.stack(pool).astype(np.float32)
            base = {"G": G, "steps": int(k), "device": device}
            for v, (problem, truth) in enumerate(problems):
                candidates = np.asarray(problem.transform.decode(pool), np.float32)
                rows.append({**base, "method": "vanilla", "volume": v, "seconds": float(np.mean(times)),
                             "ssim": ssim_volume(candidates[0], truth), "peak_mem_mb": sample_peak})
                refined = drift(candidates, problem, n_iter=drift_iter, refine_top=drift_refine_top, progress=False)
                rows.append({**base, "method": "drift", "volume": v, "seconds": sum(times) + refined.seconds,
                             "ssim": ssim_volume(refined.volume, truth), "peak_mem_mb": sample_peak})
                _reset_peaks(devices)
                _, row, _ = run_dart(models, problem, truth, modality="mri", settings={**dart_settings, "steps": int(k)},
                                     seed=seed + v, progress=False)
                rows.append({**base, "method": "dart", "volume": v, "seconds": row["wall_s"], "ssim": row["ssim"],
                             "peak_mem_mb": _peak_mb(devices)})
                log.info("G=%d, %d steps, volume %d: %s", G, k, v,
                         ", ".join(f"{r['method']} {r['seconds']:.2f} s SSIM {r['ssim']:.3f}" for r in rows[-3:]))
    return pd.DataFrame(rows)


def read_benchmark(path) -> dict:
    """Wall seconds and peak resident memory (MB) of one job from its Snakemake benchmark file."""
    try:
        frame = pd.read_csv(path, sep="\t")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the benchmark file ({exc})") from None
    missing = {"s", "max_rss"} - set(frame.columns)
    if missing or frame.empty:
        raise InputError(f"{path}: a Snakemake benchmark file needs rows and the columns s, max_rss; "
                         f"missing {sorted(missing)}")
    # the last repeat; max_rss is "-" when the job ended before it was first sampled
    last = frame.iloc[-1]
    rss = pd.to_numeric(pd.Series([last["max_rss"]]), errors="coerce").iloc[0]
    return {"seconds": float(last["s"]), "max_rss_mb": float(rss)}


def cost_per_device(train: Mapping[int, Sequence[str]], generate: Mapping[int, str], n_generated: int,
                    train_seconds: Mapping[int, Sequence[float | None]] | None = None,
                    model_mb: Mapping[int, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """Time and peak memory per device against G, from the rules' benchmark files.

    Training runs one job (one device) per partition: per device = the largest over g. A job
    resumed from a checkpoint times only its own run in the benchmark file, so
    `train_seconds[G][g]`, the training time that the model file records over every run
    (`physdiff.models.train.save_model`), replaces the benchmark's seconds where it is given
    (None: the benchmark's). The `generate` job samples `n_generated` volumes with all G models
    in one process, which on the CPU is one device (on CUDA the partitions sit on G devices, but
    max_rss still counts host memory only); its time is given per volume.

    `model_mb[G]` = {"train": MB, "sample": MB}, the largest over the G partition models of
    what one device holds for the model (`model_memory_per_device`), fills the column model_mb
    (NaN where not given): unlike max_rss it leaves out the libraries every job loads.
    """
    rows = []
    for G in sorted(train):
        jobs = [read_benchmark(p) for p in train[G]]
        if len(jobs) != G:
            raise InputError(f"Figure 5: G={G} needs {G} training benchmark files, got {len(jobs)}")
        recorded = list((train_seconds or {}).get(G) or [None] * G)
        if len(recorded) != G:
            raise InputError(f"Figure 5: G={G} needs {G} recorded training times, got {len(recorded)}")
        seconds = [j["seconds"] if r is None else float(r) for j, r in zip(jobs, recorded)]
        mb = (model_mb or {}).get(G, {})
        rows.append({"stage": "train (one job per partition)", "G": G,
                     "seconds": max(seconds), "max_rss_mb": max(j["max_rss_mb"] for j in jobs),
                     "model_mb": float(mb.get("train", np.nan))})
        if G in generate:
            job = read_benchmark(generate[G])
            rows.append({"stage": "sample (all partitions in one job)", "G": G,
                         "seconds": job["seconds"] / max(n_generated, 1), "max_rss_mb": job["max_rss_mb"],
                         "model_mb": float(mb.get("sample", np.nan))})
    return pd.DataFrame(rows)


def model_memory_per_device(paths: Mapping[int, Sequence[str]], *, slices: int, train_batch: int,
                            sample_batch: int, device: str | None = None) -> dict[int, dict[str, float]]:
    """{G: {"train": MB, "sample": MB}}: the largest over partition g of `physdiff.models.memory`'s
    parameters plus peak growth, for one training step at `train_batch` and one sampling forward at
    `sample_batch` on partition g's slab of a `slices`-slice volume, each in a fresh process.

    A seam-aware sampler runs one more forward per boundary on a window no longer than the slabs
    beside it, one forward after another, so its peak per device is that of the slab forward.
    """
    out = {}
    for G, models in sorted(paths.items()):
        bounds = partition_bounds(slices, G)
        if len(models) != G:
            raise InputError(f"Figure 5: G={G} needs {G} model files, got {len(models)}")
        out[G] = {stage: max(measure_in_subprocess(path, slices=e - a, batch=batch, stage=stage, device=device)["total_mb"]
                             for path, (a, e) in zip(models, bounds))
                  for stage, batch in (("train", train_batch), ("sample", sample_batch))}
        log.info("G=%d: per device, model memory %.0f MB for a training step, %.0f MB for a sampling forward",
                 G, out[G]["train"], out[G]["sample"])
    return out
