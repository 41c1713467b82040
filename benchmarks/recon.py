"""Wall time, peak memory and SSIM per volume of DART, DRIFT and the MRI baselines, in one run.

Usage (after the default pipeline has trained the priors and tuned the methods):
    python benchmarks/recon.py                          # default paths under results/
    python benchmarks/recon.py --volumes 2 --steps 10 20 50 100 200 --ddpm-steps 1000

Each measurement runs in a fresh process (spawned), so its peak resident memory is its own:
the peak RSS of that process, imports and models included (the CUDA allocator's peak on a GPU).
Prints a table per method (seconds per volume, peak MB, SSIM), the ratio of DART's time to
CS's, and DART's SSIM against the number of reverse steps. Measurements use the test volumes
and the settings the pipeline chose on the validation split (results/recon/mri/tuning/).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np


def _measure(task: dict) -> dict:
    """Run one method on one volume in this (fresh) process; return time, peak memory, SSIM."""
    import torch

    from physdiff.recon.run import mri_params, peak_memory_mb, reconstruct_mri
    from physdiff.recon.run_prior import build_problem, load_partition_models, run_dart, run_drift

    torch.set_num_threads(task["threads"])
    volume = np.load(task["data"], mmap_mode="r")[task["index"]].astype(np.float32)
    mask = np.load(task["mask"])
    seed = task["cfg"]["seed"] + task["index"]
    method = task["method"]
    if method in ("zero_filled", "cs_l1_wavelet", "tv", "projection"):
        tuned = json.loads(Path(task["tuning"][method]).read_text()) if method != "zero_filled" else None
        params = mri_params(method, max_iter=task["max_iter"].get(method), tuned=tuned, wavelet=task["cfg"]["wavelet"],
                            levels=task["cfg"]["levels"])
        _, row = reconstruct_mri(volume, mask, method=method, params=params, seed=seed)
        return {"wall_s": row["wall_s"], "peak_mb": peak_memory_mb(), "ssim": row["ssim"]}
    problem = build_problem("mri", task["cfg"], volume=volume, mask=mask, seed=seed,
                            solver_tuning=task["tuning"][task["cfg"]["solver"]])
    if method.startswith("dart"):
        models = load_partition_models(task["models"], slices=volume.shape[0], size=volume.shape[1:])
        _, row, _ = run_dart(models, problem, volume, modality="mri", settings=task["settings"], seed=seed,
                             progress=False)
        return {"wall_s": row["wall_s"], "peak_mb": row["peak_mem_mb"], "ssim": row["ssim"]}
    candidates = np.load(task["candidates"])
    start = time.perf_counter()
    _, rows, _ = run_drift(candidates, problem, volume, modality="mri", n_iter=task["n_iter"],
                           refine_top=task["refine_top"], progress=False)
    return {"wall_s": time.perf_counter() - start, "peak_mb": peak_memory_mb(), "ssim": rows[0]["ssim"]}


def _run(task: dict) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (task,))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="the pipeline's results folder")
    ap.add_argument("--mask", default="gaussian_R4")
    ap.add_argument("--G", type=int, default=2, help="partition count of the MRI prior")
    ap.add_argument("--volumes", type=int, default=2, help="test volumes per measurement")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 200], help="DART reverse steps swept")
    ap.add_argument("--ddpm-steps", type=int, default=1000, help="DART with ancestral DDPM: reverse steps")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import yaml

    from physdiff.config import mri_problem_config, validate_config
    from physdiff.recon.run_prior import load_drift_tuning

    res = Path(args.results)
    cfg = validate_config(yaml.safe_load(Path("config/config.yaml").read_text()))
    rc = cfg["recon"]
    problem_cfg = mri_problem_config(cfg)
    tuning = {m: str(res / f"recon/mri/tuning/{args.mask}/{m}.json") for m in ("cs_l1_wavelet", "tv", "projection")}
    settings = json.loads((res / "recon/mri/tuning/dart.json").read_text())["settings"]
    drift_iter, drift_refine_top = load_drift_tuning(res / "recon/mri/tuning/drift.json")
    base = {"data": str(res / "data/mri/brats/test.npy"), "mask": str(res / f"data/mri/masks/{args.mask}.npy"),
            "cfg": problem_cfg, "tuning": tuning, "max_iter": rc["mri"]["max_iter"], "threads": args.threads,
            "models": [str(res / f"prior/mri/G{args.G}/g{g}/model.pt") for g in range(args.G)],
            "candidates": str(res / "recon/mri/drift/candidates.npy"),
            "n_iter": drift_iter, "refine_top": drift_refine_top}
    methods = {"zero_filled": {}, "cs_l1_wavelet": {}, "tv": {}, "projection": {},
               f"dart_ddim{settings['steps']}": {"settings": settings},
               f"dart_ddpm{args.ddpm_steps}": {"settings": {**settings, "sampler": "ddpm", "steps": args.ddpm_steps}},
               "drift": {}}
    print(f"MRI {args.mask}, {args.volumes} test volumes, {args.threads} thread(s), DART settings {settings}")
    print(f"{'method':<18} {'s/volume':>9} {'peak MB':>8} {'SSIM':>14}")
    table = {}
    for name, extra in methods.items():
        runs = [_run({**base, **extra, "method": name, "index": i}) for i in range(args.volumes)]
        wall, peak, ssim = (np.array([r[k] for r in runs]) for k in ("wall_s", "peak_mb", "ssim"))
        table[name] = wall.mean()
        print(f"{name:<18} {wall.mean():9.2f} {peak.max():8.0f} {ssim.mean():7.4f} ± {ssim.std():.4f}")
    dart_name = f"dart_ddim{settings['steps']}"
    print(f"DART ({dart_name}) / CS time ratio: {table[dart_name] / table['cs_l1_wavelet']:.1f}")
    print("\nDART SSIM against reverse steps (DDIM, other settings as tuned)")
    print(f"{'steps':>6} {'s/volume':>9} {'SSIM':>14}")
    for steps in args.steps:
        runs = [_run({**base, "method": "dart", "settings": {**settings, "steps": steps}, "index": i})
                for i in range(args.volumes)]
        ssim = np.array([r["ssim"] for r in runs])
        print(f"{steps:>6} {np.mean([r['wall_s'] for r in runs]):9.2f} {ssim.mean():7.4f} ± {ssim.std():.4f}")


if __name__ == "__main__":
    main()
