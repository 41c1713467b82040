"""What more training buys: the config's partition models trained for more steps, scored by DART on validation.

    python benchmarks/prior_compute.py train --modality mri --steps 1000 3000 6000 --out runs/compute
    python benchmarks/prior_compute.py score --modality mri --models runs/compute [--n-val 6]

`train` trains every partition g of G (default: the G that DART uses) with the config's model,
training settings and seeds (`physdiff.models.train.train_partition`, as the train_prior rule
does), extending one checkpoint to each step count in turn (the learning rate is constant after
the warm-up, so the snapshot at N steps is the model an N-step run writes), and saves
OUT/<modality>/steps<N>/g<g>/model.pt with the validation eps L1 history beside it. On CUDA the
partitions train side by side in separate processes; on the CPU one after another unless
`--jobs N` runs N side by side.
`--budget-s` stops starting new step counts after that many seconds.

`score` runs DART with the settings tune_dart chose (MRI: for the mask gaussian_R4) on the
first --n-val validation volumes or samples with each snapshot, and with the run's own
partition models, and prints the validation SSIM per step count: the measurement of how far
the prior's training length limits DART. `--drift` also draws each set's DRIFT pool
(recon.drift.n_candidates volumes, the config's sampler and seams, the drift_candidates rule's
seed) and prints DRIFT's and its twin's validation SSIM with the K and M that tune_drift chose.
Both read a finished run's results folder (--results).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
import yaml

from physdiff.config import validate_config
from physdiff.results import Layout


def train_one(modality: str, G: int, g: int, steps: list[int], data: str, val: str, cfg: dict, out: str,
              budget_s: float, device: str) -> None:
    from physdiff.config import prior_model_config
    from physdiff.models.train import save_model, train_partition

    torch.set_num_threads(1)
    volumes, val_volumes = np.load(data), np.load(val)
    start = time.perf_counter()
    ckpt = Path(out) / f"checkpoint-{modality}-G{G}-g{g}.pt"
    ckpt.unlink(missing_ok=True)
    for n in sorted(steps):
        if time.perf_counter() - start > budget_s:
            print(f"{modality} g{g}: budget spent, {n} steps not started", flush=True)
            break
        result = train_partition(volumes, val_volumes, G=G, g=g, model_cfg=prior_model_config(cfg, modality),
                                 train_cfg={**cfg["prior"]["train"], "checkpoint_every_s": 1e9},
                                 augment=cfg["prior"]["augment"][modality], seed=cfg["seed"], checkpoint_path=ckpt,
                                 contrasts=cfg["mri"]["train_contrasts"] if modality == "mri" else (),
                                 steps=n, device=device, progress=False)
        folder = Path(out) / modality / f"steps{n}" / f"g{g}"
        folder.mkdir(parents=True, exist_ok=True)
        save_model(folder / "model.pt", result)
        (folder / "val.json").write_text(json.dumps({"val_history": result.val_history,
                                                     "train_seconds": result.total_seconds}))
        last = result.val_history[-1][1] if result.val_history else float("nan")
        print(f"{modality} g{g}: {n} steps, {result.total_seconds:.0f} s in all, validation eps L1 {last:.4f}",
              flush=True)
    ckpt.unlink(missing_ok=True)


def train(args, cfg: dict) -> None:
    lay = Layout(args.results)
    data = {"mri": (lay.mri_split("train"), lay.mri_split("val")),
            "stem": (lay.stem_prior_data("train"), lay.stem_prior_data("val"))}
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    jobs = []
    for modality in args.modality:
        G = cfg["recon"]["partitions"][modality]
        for g in range(G):
            jobs.append((modality, G, g, args.steps, str(data[modality][0]), str(data[modality][1]), cfg, args.out,
                         args.budget_s, device))
    side_by_side = args.jobs or (len(jobs) if device == "cuda" else 1)
    print(f"{len(jobs)} partitions on {device}, {side_by_side} at a time: steps {sorted(args.steps)}", flush=True)
    ctx = mp.get_context("spawn")
    for first in range(0, len(jobs), side_by_side):
        procs = [ctx.Process(target=train_one, args=job) for job in jobs[first:first + side_by_side]]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise SystemExit(f"training failed: exit codes {[p.exitcode for p in procs]}")


def score(args, cfg: dict) -> None:
    from physdiff.metrics.seams import partition_boundaries, seam_ratio
    from physdiff.recon.run_prior import load_partition_models, run_dart, validation_problems

    lay = Layout(args.results)
    rc = cfg["recon"]
    for modality in args.modality:
        G = rc["partitions"][modality]
        settings = {**json.loads(lay.tuning(modality, "dart").read_text())["settings"],
                    **json.loads(args.dart_override)}
        problems = validation_problems(args.results, cfg, modality, args.n_val, solver_tuning=False)  # tune_dart's
        truths = np.stack([truth for _, truth, _ in problems])
        S = truths.shape[1]
        sets = {} if args.no_pipeline else {"pipeline": lay.prior_models(modality, G)}
        for folder in sorted((Path(args.models) / modality).glob("steps*"), key=lambda p: int(p.name[5:])):
            sets[folder.name] = [folder / f"g{g}/model.pt" for g in range(G)]
        print(f"{modality}: {len(problems)} validation volumes, G = {G}, DART settings {settings}", flush=True)
        for name, paths in sets.items():
            if not all(p.exists() for p in paths):
                print(f"  {name}: missing {[str(p) for p in paths if not p.exists()]}", flush=True)
                continue
            meta = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
            models = load_partition_models([str(p) for p in paths], slices=S, size=truths.shape[2:])
            start, scores, volumes = time.perf_counter(), [], []
            for i, (problem, truth, sigma) in enumerate(problems):
                volume, row, _ = run_dart(models, problem, truth, modality=modality, settings=settings,
                                          seed=cfg["seed"] + i, sigma=sigma, progress=False)
                scores.append(row["ssim"])
                volumes.append(volume)
            seam = seam_ratio(np.stack(volumes), partition_boundaries(S, G)) if modality == "mri" else float("nan")
            seconds = [m.get("train_seconds") for m in meta]  # absent in files written before it was recorded
            trained = f"{sum(seconds):.0f} s" if None not in seconds else "unrecorded time"
            print(f"  {name:10} steps {[m['step'] for m in meta]}, trained {trained} in all: validation SSIM {np.mean(scores):.4f} ± {np.std(scores):.4f}"
                  + (f", seam ratio {seam:.2f}" if modality == "mri" else "")
                  + f" ({(time.perf_counter() - start) / len(problems):.1f} s per volume)", flush=True)
            if args.drift:
                print("  " + drift_line(cfg, args.results, modality, models, args.n_val, truths.shape[1:]), flush=True)


def drift_pool(cfg: dict, modality: str, models, shape, **sampling) -> np.ndarray:
    """The drift_candidates rule's pool (its seed, recon.drift.n_candidates volumes of the modality,
    the config's prior.sampling with `sampling` overriding it), in the prior's encoding."""
    from physdiff.config import drift_pool_seed
    from physdiff.models.sampling import sample_volumes

    return sample_volumes(models, cfg["recon"]["drift"]["n_candidates"][modality], tuple(shape),
                          batch_size=cfg["prior"]["generate"]["batch_size"], seed=drift_pool_seed(cfg),
                          progress=False, **{**cfg["prior"]["sampling"], **sampling})


def drift_ssims(pool: np.ndarray, problems, modality: str, n_iter: int, *, refine_top: int = 1,
                twin: bool = True) -> tuple[list, list]:
    """SSIM of DRIFT (K = n_iter, M = refine_top) from `pool` (decoded to data units, as
    reconstruct_drift does) on each (problem, truth, sigma), and of its physics-only twin unless
    `twin` is False."""
    from physdiff.recon.drift import drift, physics_only
    from physdiff.recon.run_prior import score

    refined, twins = [], []
    for problem, truth, sigma in problems:
        volume = drift(problem.transform.decode(pool), problem, n_iter=n_iter, refine_top=refine_top,
                       progress=False).volume
        refined.append(score(modality, volume, truth, sigma)["ssim"])
        if twin:
            twins.append(score(modality, physics_only(problem, n_iter=n_iter).volume, truth, sigma)["ssim"])
    return refined, twins


def drift_line(cfg: dict, results: str, modality: str, models, n_val: int, shape) -> str:
    """DRIFT and its twin on the first n_val validation problems, from a pool these models draw."""
    from physdiff.recon.run_prior import load_drift_tuning, validation_problems

    K, M = load_drift_tuning(Layout(results).tuning(modality, "drift"))
    problems = validation_problems(results, cfg, modality, n_val, solver_tuning=True)  # tune_drift's
    drift, twin = drift_ssims(drift_pool(cfg, modality, models, shape), problems, modality, K, refine_top=M)
    return (f"DRIFT (pool of {cfg['recon']['drift']['n_candidates'][modality]}, K = {K}, M = {M}): validation SSIM "
            f"{np.mean(drift):.4f} ± {np.std(drift):.4f}, twin {np.mean(twin):.4f} ± {np.std(twin):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["train", "score"])
    ap.add_argument("--modality", nargs="+", choices=["mri", "stem"], default=["mri"])
    ap.add_argument("--results", default="results", help="the pipeline's results folder")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--steps", type=int, nargs="+", default=[1000, 3000, 6000])
    ap.add_argument("--out", default="benchmarks/out/prior_compute", help="train: where the snapshots go")
    ap.add_argument("--models", default="benchmarks/out/prior_compute", help="score: the train mode's --out")
    ap.add_argument("--jobs", type=int, default=None,
                    help="train: partitions side by side, one process (one thread) each (default: all on CUDA, 1 on the CPU)")
    ap.add_argument("--budget-s", type=float, default=float("inf"))
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None)
    ap.add_argument("--n-val", type=int, default=6)
    ap.add_argument("--no-pipeline", action="store_true", help="score: only the snapshots, not the run's own models")
    ap.add_argument("--dart-override", default="{}",
                    help='score: JSON merged into the tuned DART settings, e.g. \'{"correction": "x0", "eta": 1.0}\'')
    ap.add_argument("--drift", action="store_true", help="score: DRIFT from a pool each set draws, besides DART")
    ap.add_argument("--threads", type=int, default=None,
                    help="score: torch and BLAS threads (default: all cores); 1 when sharing the machine with other jobs")
    args = ap.parse_args()
    if args.threads and args.mode == "score":
        from physdiff.workflow import set_threads

        set_threads(args.threads)
    cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    (train if args.mode == "train" else score)(args, cfg)


if __name__ == "__main__":
    main()
