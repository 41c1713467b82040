"""Wall time, peak memory and SSIM per volume of DART, DRIFT and the baselines, in one run.

Usage (after the default pipeline has trained the priors and tuned the methods):
    python benchmarks/recon.py                          # MRI, default paths under results/
    python benchmarks/recon.py --volumes 2 --steps 10 20 50 100 200 --ddpm-steps 1000
    python benchmarks/recon.py --modality stem --volumes 1 --ddpm-steps 0   # 4D-STEM; 0 skips DDPM

Each measurement runs in a fresh process (spawned), so its peak resident memory is its own:
the peak RSS of that process, imports and models included (the CUDA allocator's peak on a GPU).
Prints a table per method (seconds per volume, peak MB, SSIM), the ratio of DART's time to
CS's (4D-STEM: to sparse decomposition's), and DART's SSIM against the number of reverse steps.
Measurements use the first test volumes or samples (the reconstruct rules' order) and the
settings the pipeline chose on the validation split (its tuning files; MRI: for --mask). MRI
SSIM is the mean per-slice SSIM, 4D-STEM's that of the phase projection; DRIFT's time (and,
for MRI, its row) includes its physics-only twin, which 4D-STEM also lists on its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from physdiff.results import Layout


def _measure(task: dict) -> dict:
    """Run one method on one volume in this (fresh) process; return time, peak memory, SSIM."""
    import torch

    from physdiff.recon.run import mri_params, peak_memory_mb, reconstruct_mri
    from physdiff.recon.run_prior import build_problem, load_partition_models, run_dart, run_drift

    torch.set_num_threads(task["threads"])
    if task["modality"] == "stem":
        return _measure_stem(task)
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
        _, row, _ = run_dart(models, problem, volume, modality="mri", settings=task["settings"], seed=task["seed"],
                             progress=False)
        return {"wall_s": row["wall_s"], "peak_mb": row["peak_mem_mb"], "ssim": row["ssim"]}
    candidates = np.load(task["candidates"])
    start = time.perf_counter()
    _, rows, _ = run_drift(candidates, problem, volume, modality="mri", n_iter=task["n_iter"],
                           refine_top=task["refine_top"], progress=False)
    return {"wall_s": time.perf_counter() - start, "peak_mb": peak_memory_mb(), "ssim": rows[0]["ssim"]}


def _measure_stem(task: dict) -> dict:
    """One 4D-STEM method on one test sample, in this (fresh) process."""
    import torch

    from physdiff.data.stem_sim import load_sample
    from physdiff.data.transforms import load_transform
    from physdiff.recon.run import peak_memory_mb, reconstruct_stem, stem_params
    from physdiff.recon.run_prior import build_problem, load_partition_models, run_dart, run_drift

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sample = load_sample(task["samples"][task["index"]])
    truth, sigma, method = np.asarray(sample["potential"], np.float32), float(sample["sigma"]), task["method"]
    if method in task["baselines"]:
        tuned = json.loads(Path(task["tuning"][method]).read_text())
        params = stem_params(method, task["settings"][method], tuned)
        _, row = reconstruct_stem(sample, method=method, params=params, loss=task["cfg"]["loss"], device=device)
        return {"wall_s": row["wall_s"], "peak_mb": row["peak_mem_mb"], "ssim": row["ssim"]}
    problem = build_problem("stem", task["cfg"], sample=sample, transform=load_transform(task["transform"]),
                            solver_tuning=task["tuning"][task["cfg"]["solver"]])
    if method.startswith("dart"):
        models = load_partition_models(task["models"], slices=truth.shape[0], size=truth.shape[1:])
        _, row, _ = run_dart(models, problem, truth, modality="stem", settings=task["settings"], seed=task["seed"],
                             sigma=sigma, progress=False)
        return {"wall_s": row["wall_s"], "peak_mb": row["peak_mem_mb"], "ssim": row["ssim"]}
    candidates = problem.transform.decode(np.load(task["candidates"]))[: task["n_candidates"]]
    start = time.perf_counter()
    _, rows, _ = run_drift(candidates, problem, truth, modality="stem", n_iter=task["n_iter"],
                           refine_top=task["refine_top"], sigma=sigma, progress=False)
    twin = rows[1]
    return {"wall_s": time.perf_counter() - start, "peak_mb": peak_memory_mb(device), "ssim": rows[0]["ssim"],
            "twin": {"wall_s": twin["wall_s"], "peak_mb": twin["peak_mem_mb"], "ssim": twin["ssim"]}}


def _run(task: dict) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (task,))


def _report(name: str, runs: list[dict]) -> float:
    """Print one method's row (mean s/volume, largest peak MB, SSIM mean ± std); return the mean time."""
    wall, peak, ssim = (np.array([r[k] for r in runs]) for k in ("wall_s", "peak_mb", "ssim"))
    print(f"{name:<22} {wall.mean():9.2f} {peak.max():8.0f} {ssim.mean():7.4f} ± {ssim.std():.4f}", flush=True)
    return float(wall.mean())


def _mri_tasks(args, cfg: dict, lay: Layout) -> tuple[dict, dict, dict, str]:
    """(common task fields, {method: extra fields}, DART settings, the classical reference) for MRI."""
    from physdiff.config import mri_problem_config
    from physdiff.recon.run_prior import load_drift_tuning

    rc = cfg["recon"]
    tuning = {m: str(lay.tuning("mri", m, args.mask)) for m in ("cs_l1_wavelet", "tv", "projection")}
    settings = json.loads(lay.tuning("mri", "dart", args.mask).read_text())["settings"]
    drift_iter, drift_refine_top = load_drift_tuning(lay.tuning("mri", "drift", args.mask))
    base = {"modality": "mri", "data": str(lay.mri_split("test")), "mask": str(lay.mri_mask(args.mask)),
            "cfg": mri_problem_config(cfg), "tuning": tuning, "max_iter": rc["mri"]["max_iter"],
            "models": [str(p) for p in lay.prior_models("mri", args.G)], "candidates": str(lay.candidates("mri")),
            "n_iter": drift_iter, "refine_top": drift_refine_top}
    methods = {m: {} for m in ("zero_filled", "cs_l1_wavelet", "tv", "projection")}
    return base, methods, settings, "cs_l1_wavelet"


def _stem_tasks(args, cfg: dict, lay: Layout) -> tuple[dict, dict, dict, str]:
    """The same for 4D-STEM: the reconstruct rules' first test samples, the tuned baselines."""
    from physdiff.config import stem_problem_config
    from physdiff.data.plan import recon_order, stem_plan
    from physdiff.recon.run_prior import load_drift_tuning

    rc = cfg["recon"]
    names = recon_order([r for r in stem_plan(cfg) if r["split"] == "test"])
    baselines = list(rc["stem"]["methods"])
    problem_cfg = stem_problem_config(cfg)
    tuning = {m: str(lay.tuning("stem", m)) for m in {*baselines, problem_cfg["solver"]}}
    settings = json.loads(lay.tuning("stem", "dart").read_text())["settings"]
    drift_iter, drift_refine_top = load_drift_tuning(lay.tuning("stem", "drift"))
    base = {"modality": "stem", "samples": [str(lay.stem_sample("test", n)) for n in names],
            "cfg": problem_cfg, "tuning": tuning, "baselines": baselines, "transform": str(lay.stem_scale()),
            "settings": {m: rc["stem"][m] for m in baselines},
            "models": [str(p) for p in lay.prior_models("stem", args.G)], "candidates": str(lay.candidates("stem")),
            "n_candidates": rc["drift"]["n_candidates"]["stem"], "n_iter": drift_iter, "refine_top": drift_refine_top}
    return base, {m: {} for m in baselines}, settings, "sparse_decomposition"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="the pipeline's results folder")
    ap.add_argument("--modality", default="mri", choices=["mri", "stem"])
    ap.add_argument("--mask", default="gaussian_R4", help="MRI: the mask")
    ap.add_argument("--G", type=int, default=2, help="partition count of the prior")
    ap.add_argument("--volumes", type=int, default=2, help="test volumes or samples per measurement")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 200], help="DART reverse steps swept")
    ap.add_argument("--ddpm-steps", type=int, default=1000,
                    help="DART with ancestral DDPM: reverse steps (0: skip; 4D-STEM takes a physics step at each)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from physdiff.config import load_config
    from physdiff.errors import InputError

    cfg = load_config(Path("config/config.yaml"))
    try:
        base, methods, settings, reference = (_mri_tasks if args.modality == "mri" else _stem_tasks)(
            args, cfg, Layout(args.results))
    except FileNotFoundError as err:
        raise InputError(f"{err.filename}: missing; run the default pipeline (its tuning rules) first") from None
    base = {**base, "threads": args.threads, "seed": cfg["seed"]}
    dart_name = f"dart_ddim{settings['steps']}"
    methods[dart_name] = {"settings": settings}
    if args.ddpm_steps:
        methods[f"dart_ddpm{args.ddpm_steps}"] = {"settings": {**settings, "sampler": "ddpm", "steps": args.ddpm_steps}}
    methods["drift"] = {}
    what = f"MRI {args.mask}, {args.volumes} test volumes" if args.modality == "mri" else \
        f"4D-STEM, {args.volumes} test samples"
    print(f"{what}, {args.threads} thread(s), DART settings {settings}")
    print(f"{'method':<22} {'s/volume':>9} {'peak MB':>8} {'SSIM':>14}")
    table = {}
    for name, extra in methods.items():
        runs = [_run({**base, **extra, "method": name, "index": i}) for i in range(args.volumes)]
        table[name] = _report(name, runs)
        if runs[0].get("twin"):
            _report("drift_physics_only", [r["twin"] for r in runs])
    print(f"DART ({dart_name}) / {reference} time ratio: {table[dart_name] / table[reference]:.1f}")
    print("\nDART SSIM against reverse steps (DDIM, other settings as tuned)")
    print(f"{'steps':>6} {'s/volume':>9} {'SSIM':>14}")
    for steps in args.steps:
        runs = [_run({**base, "method": "dart", "settings": {**settings, "steps": steps}, "index": i})
                for i in range(args.volumes)]
        ssim = np.array([r["ssim"] for r in runs])
        print(f"{steps:>6} {np.mean([r['wall_s'] for r in runs]):9.2f} {ssim.mean():7.4f} ± {ssim.std():.4f}")


if __name__ == "__main__":
    main()
