"""What per-scan adaptation costs: DART with and without `recon.dart.adapt`, time and peak memory per volume.

    python benchmarks/adapt.py [--results results] [--mask gaussian_R4] [--n 2] [--adapt '{"rank": 4}'] [--device cpu|cuda]
    python benchmarks/adapt.py --smoke        # random tiny models on a phantom: checks the script, measures nothing

Each reconstruction runs in a fresh process (so the CPU peak resident set size is its own) on the
first --n validation volumes of a finished default run, measured with --mask as tune_dart measures
them, with the DART settings tune_dart chose for that mask and the partition models the rules use.
It prints, per volume, seconds, peak memory (MB: CUDA allocations on a GPU, else the process's peak
RSS) and SSIM of plain and adapted DART, the adapted run's held-out stop, and the time ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import yaml


def _one(task: dict) -> dict:
    import torch

    from physdiff.recon.run import peak_memory_mb, reset_peak_memory
    from physdiff.recon.run_prior import load_partition_models, run_dart, validation_problems

    torch.set_num_threads(task["threads"])
    device = task["device"]
    if task["smoke"]:
        problem, truth, models = _smoke_case()
        settings = {"sampler": "ddim", "steps": 4, "eta": 0.0, "correction": "x0", "seam": "overlap"}
    else:
        from physdiff.config import validate_config
        from physdiff.results import Layout

        cfg = validate_config(yaml.safe_load(Path(task["config"]).read_text()))
        problem, truth, _ = validation_problems(task["results"], cfg, "mri", task["index"] + 1, solver_tuning=False,
                                                mask=task["mask"])[task["index"]]
        models = load_partition_models(Layout(task["results"]).prior_models("mri", cfg["recon"]["partitions"]["mri"]),
                                       slices=truth.shape[0], size=truth.shape[1:])
        settings = json.loads(Path(task["tuning"]).read_text())["settings"]
    if device == "cuda":
        models = [m.to("cuda") for m in models]
    reset_peak_memory(device if device == "cuda" else None)
    _, row, _ = run_dart(models, problem, truth, modality="mri", settings=settings, seed=task["seed"], progress=False,
                         adapt=task["adapt"])
    return {"seconds": row["wall_s"], "peak_mb": peak_memory_mb(device if device == "cuda" else None),
            "ssim": row["ssim"], "stop": row.get("adapt_stop")}


def _smoke_case():
    import torch

    from physdiff.data.phantoms import blob_volume
    from physdiff.models.unet import build_unet
    from physdiff.physics.mri import simulate_kspace
    from physdiff.recon.problems import MRIProblem

    torch.manual_seed(0)
    truth = blob_volume(4, 16, seed=0)
    mask = np.zeros((16, 16), bool)
    mask[:, ::3] = True
    mask[:, 6:10] = True
    cfg = {"dim": 8, "dim_mults": [1, 2], "attn_resolutions": [8], "temporal_attn_resolutions": [8], "image_size": 16}
    models = [build_unet(cfg).eval() for _ in range(2)]
    for m in models:
        for p in m.parameters():
            p.data.normal_(0.0, 0.05)
    return MRIProblem(simulate_kspace(truth, mask), mask), truth, models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="a finished default run's results folder")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--mask", default="gaussian_R4")
    ap.add_argument("--n", type=int, default=2, help="validation volumes")
    ap.add_argument("--adapt", default=None, help="recon.dart.adapt settings as JSON (default: the config's)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="random tiny models on a phantom (no results folder)")
    args = ap.parse_args()
    if args.smoke:
        adapt, seed, tuning = json.loads(args.adapt or "{}"), 0, None
        args.n = 1
    else:
        from physdiff.config import adapt_settings, validate_config
        from physdiff.results import Layout

        cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
        conf = adapt_settings(cfg)
        adapt, seed = {**conf, **json.loads(args.adapt or "{}")}, cfg["seed"]
        tuning = str(Layout(args.results).tuning("mri", "dart", args.mask))
        if not Path(tuning).is_file():
            raise SystemExit(f"{tuning}: missing; run the default pipeline first (or use --smoke)")
    ctx = mp.get_context("spawn")
    print(f"DART with and without adaptation {adapt}, mask {args.mask}, {args.device}, {args.threads} thread(s)")
    ratios = []
    for i in range(args.n):
        base = {"results": args.results, "config": args.config, "mask": args.mask, "index": i, "seed": seed + i,
                "tuning": tuning, "device": args.device, "threads": args.threads, "smoke": args.smoke}
        with ctx.Pool(1) as pool:
            plain = pool.apply(_one, ({**base, "adapt": None},))
        with ctx.Pool(1) as pool:
            adapted = pool.apply(_one, ({**base, "adapt": adapt},))
        ratios.append(adapted["seconds"] / plain["seconds"])
        print(f"volume {i}: plain {plain['seconds']:.1f} s, {plain['peak_mb']:.0f} MB, SSIM {plain['ssim']:.4f}; "
              f"adapted {adapted['seconds']:.1f} s, {adapted['peak_mb']:.0f} MB, SSIM {adapted['ssim']:.4f}, "
              f"stop after {adapted['stop']} fits; time x{ratios[-1]:.2f}")
    print(f"mean time ratio adapted / plain: {np.mean(ratios):.2f}")


if __name__ == "__main__":
    main()
