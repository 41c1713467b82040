"""Scan positions per batch in the 4D-STEM physics: what each batch size costs on this device.

    python benchmarks/stem_batch.py [--results results] [--batches 16 64 all auto] [--iters 10]
    python benchmarks/stem_batch.py --samples A.npz B.npz [--batches 16 all]

Every 4D-STEM solver (sparse decomposition, Torchslice, DART's physics step, DRIFT's scoring and
refinement) sends the scan through the multislice model a batch of positions at a time.
`MultisliceModel.scan_batch` picks the batch when none is given ("auto": 16 on the CPU; on CUDA
the whole scan where it fits a quarter of the free memory). For each sample (default: the run's
validation samples) and each batch size this times, best of --repeats:
  bright field    the forward of every position, summed over the bright-field disc (DRIFT's score);
  loss+grad       Eq. (2) of docs/method.md and its gradient at half the true potential, the core of every
                  physics step;
  sparse K        --iters layer-wise sweeps of sparse decomposition (DRIFT's solver) from V = 0;
  torchslice K    --iters Adam iterations from V = 0;
and checks that the batch changes nothing: the relative difference of the loss and gradient
and of each solver's result against the first batch size. Runs on CUDA where there is one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def best_time(fn, repeats: int, device: torch.device) -> tuple[float, object]:
    """Best wall time of fn() over `repeats` runs after one warm-up run, and its last result."""
    out = fn()  # warm-up: cuFFT plans, allocator
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def rel(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def main() -> None:
    from physdiff.data.stem_sim import load_sample
    from physdiff.physics.multislice import MultisliceGeometry, MultisliceModel
    from physdiff.physics.stem_loss import loss_and_grad
    from physdiff.recon.stem_baselines import sparse_decomposition, torchslice
    from physdiff.results import Layout
    from physdiff.workflow import set_threads

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="the run whose validation samples are the default")
    ap.add_argument("--samples", nargs="+", default=None, help="4D-STEM sample files (.npz) instead")
    ap.add_argument("--batches", nargs="+", default=["16", "64", "all", "auto"],
                    help="positions per batch: integers, 'all' (the whole scan) or 'auto' (scan_batch's choice)")
    ap.add_argument("--iters", type=int, default=10, help="solver iterations timed (K; 0 skips the solvers)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sparsity", type=float, default=1e-6, help="sparse decomposition's weight")
    ap.add_argument("--lr", type=float, default=20.0, help="Torchslice's Adam step (V·Å)")
    ap.add_argument("--device", default=None, help="default: CUDA where there is one, else the CPU")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    set_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"the CPU ({args.threads} threads)"
    print(f"on {name}, torch {torch.__version__}; K = {args.iters}, best of {args.repeats}", flush=True)

    totals: dict[str, dict[str, float]] = {}
    samples = args.samples or Layout(args.results).stem_samples("val")
    if not samples:
        raise SystemExit(f"no 4D-STEM validation samples under {args.results}: run the pipeline first or pass --samples")
    for path in samples:
        sample = load_sample(path)
        geometry = MultisliceGeometry.from_sample(sample)
        model = MultisliceModel(geometry, device=device)
        n_positions = int(np.prod(geometry.scan_shape))
        intensities = torch.as_tensor(np.asarray(sample["intensities"]), dtype=model.real_dtype, device=device)
        v0 = torch.zeros((geometry.n_slices, *geometry.gpts), dtype=model.real_dtype, device=device)
        truth = torch.as_tensor(np.asarray(sample["potential"], np.float32), device=device)
        half = 0.5 * truth  # a point where the gradient is far from zero
        print(f"\n{path}: {geometry.n_slices} slices of {geometry.gpts[0]} x {geometry.gpts[1]}, "
              f"{n_positions} positions; auto -> {model.scan_batch()}", flush=True)
        print("| batch | bright field s | loss+grad s | sparse K s | torchslice K s | rel. diff grad | "
              "rel. diff sparse | rel. diff torchslice |")
        print("|---|---|---|---|---|---|---|---|")
        reference = None
        for label in args.batches:
            batch = n_positions if label == "all" else None if label == "auto" else int(label)
            solver_kw = dict(v0=v0, n_iter=args.iters, batch_size=batch, model=model, device=device,
                             progress=False)
            t_bf, _ = best_time(lambda: model.bright_field(truth, batch_size=batch), args.repeats, device)
            t_lg, (loss, grad) = best_time(
                lambda: loss_and_grad(model, half, intensities, batch_size=batch), args.repeats, device)
            t_sp = t_ts = float("nan")
            v_sp = v_ts = torch.zeros(1)
            if args.iters > 0:  # deterministic solvers: the first run is the warm-up, so one more run suffices
                t_sp, (v_sp, _) = best_time(lambda: sparse_decomposition(intensities, geometry, sparsity=args.sparsity,
                                                                         **solver_kw), 1, device)
                t_ts, (v_ts, _) = best_time(lambda: torchslice(intensities, geometry, lr=args.lr, **solver_kw), 1,
                                            device)
            if reference is None:
                reference = (grad, v_sp, v_ts)
            diffs = (rel(grad.cpu(), reference[0].cpu()), rel(v_sp, reference[1]), rel(v_ts, reference[2]))
            print(f"| {label} | {t_bf:.4f} | {t_lg:.4f} | {t_sp:.3f} | {t_ts:.3f} | "
                  + " | ".join(f"{d:.1e}" for d in diffs) + " |", flush=True)
            acc = totals.setdefault(label, {"bf": 0.0, "lg": 0.0, "sp": 0.0, "ts": 0.0})
            for key, t in zip(("bf", "lg", "sp", "ts"), (t_bf, t_lg, t_sp, t_ts)):
                acc[key] += t
    if len(samples) > 1:
        first = args.batches[0]
        print(f"\nsummed over {len(samples)} samples (speed-up against batch {first}):")
        for label, acc in totals.items():
            print(f"  batch {label:>5}: bright field {acc['bf']:.3f} s, loss+grad {acc['lg']:.3f} s, "
                  f"sparse K {acc['sp']:.2f} s (x{totals[first]['sp'] / acc['sp']:.1f}), "
                  f"torchslice K {acc['ts']:.2f} s (x{totals[first]['ts'] / acc['ts']:.1f})", flush=True)


if __name__ == "__main__":
    main()
