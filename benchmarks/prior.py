"""Benchmark the partitioned video-diffusion prior: training step, sampling, peak memory.

Prints tables of
  * training step time (forward + backward + Adam; per micro-batch and per optimiser step
    with --grad-accum micro-batches) for model variants at the CPU default size and the
    paper size;
  * sampling time per reverse step for one volume with G partition models (x --steps);
  * peak inference memory of one full-volume model (G=1, S slices) against one partition
    model (G=2, S/2 slices), each measured in a fresh subprocess: torch.cuda peak where
    CUDA is available, else the growth of the process's peak RSS (ru_maxrss) over the forward.
  * optionally (--learn N) the mean L1 loss of the last 20 of N training steps per variant
    on synthetic 64x64 slabs, to check that the cheaper variants still learn.

  * --compare REV: CPU seconds per training step of the U-Net at git revision REV against this
    tree's and its cheaper variants, timed interleaved in one run;
  * --lr-study LR...: short MRI G=2 runs scored by the validation loss (benchmarks/studies/prior_study.md).

Example: python benchmarks/prior.py --threads 2 --size default
         python benchmarks/prior.py --threads 1 --compare 680e379 --repeats 5 [--compare-also 03ecce2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from physdiff.models.diffusion import GaussianDiffusion
from physdiff.models.memory import MALLOC_ENV, peak_growth
from physdiff.models.sampling import reverse_diffusion
from physdiff.models.unet import build_unet

BASE = {"dim": 16, "dim_mults": (1, 2, 4), "res_blocks": 1, "attn_resolutions": (16,), "temporal_attn": True}
VARIANTS = {
    "base (attn 16, slice-attn all)": ({}, False),
    "base + channels_last": ({}, True),
    "slice-attn <=32 only": ({"temporal_attn_resolutions": (32, 16)}, False),
    "slice-attn <=32 + channels_last": ({"temporal_attn_resolutions": (32, 16)}, True),
    "no spatial attn": ({"attn_resolutions": ()}, False),
    "no slice attn": ({"temporal_attn": False}, False),
    "res_blocks 2": ({"res_blocks": 2}, False),
    "dim 32": ({"dim": 32}, False),
}
PAPER = {"dim": 64, "dim_mults": (1, 2, 4, 8), "res_blocks": 2, "attn_resolutions": (16,), "temporal_attn": True}


def time_train_step(cfg: dict, *, batch: int, slices: int, size: int, grad_accum: int, repeats: int,
                    channels_last: bool = False) -> tuple[float, int]:
    """Fastest seconds per optimiser step (grad_accum micro-batches) and the parameter count."""
    torch.manual_seed(0)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = build_unet(cfg).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    diff, gen = GaussianDiffusion(), torch.Generator().manual_seed(0)
    x0 = (torch.rand(batch, 1, slices, size, size) * 2 - 1).contiguous(memory_format=fmt)
    times = []
    for _ in range(repeats + 1):  # the first step warms up allocators and kernels
        t0 = time.perf_counter()
        for _ in range(grad_accum):
            (diff.loss(model, x0, generator=gen) / grad_accum).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    # the minimum, not the median: on a shared machine the other jobs only ever add time
    return float(np.min(times[1:])), sum(p.numel() for p in model.parameters())


def time_sampling(cfg: dict, *, partitions: int, slices: int, size: int, steps: int) -> float:
    """Seconds per reverse step for one volume with `partitions` models run in turn on the CPU."""
    models = [build_unet(cfg) for _ in range(partitions)]
    reverse_diffusion(models, (1, slices, size, size), steps=2, progress=False)  # warm-up
    t0 = time.perf_counter()
    reverse_diffusion(models, (1, slices, size, size), steps=steps, progress=False)
    return (time.perf_counter() - t0) / steps


def peak_memory_child(cfg: dict, slices: int, size: int, batch: int) -> dict:
    """Run in a fresh process: peak memory of one inference forward of one model."""
    torch.manual_seed(0)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_unet(cfg).to(dev).eval()
    x = torch.randn(batch, 1, slices, size, size, device=dev)
    t = torch.full((batch,), 500, device=dev)
    with torch.no_grad():
        model(torch.randn(1, 1, 1, size, size, device=dev), t[:1])  # load kernels before the baseline
        base, peak = peak_growth(dev, lambda: model(x, t))
    return {"device": dev.type, "base_mb": base / 2**20, "peak_mb": peak / 2**20, "growth_mb": (peak - base) / 2**20}


def peak_memory(cfg: dict, slices: int, size: int, batch: int, threads: int) -> dict:
    """peak_memory_child in a subprocess, so every measurement starts from a clean process."""
    here = str(Path(__file__).resolve().parent)
    code = (f"import json, sys, torch; torch.set_num_threads({threads}); sys.path.insert(0, {here!r}); "
            f"import prior; print(json.dumps(prior.peak_memory_child({cfg!r}, {slices}, {size}, {batch})))")
    env = {**os.environ, **MALLOC_ENV}  # RSS then follows the live tensors (physdiff.models.memory)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def learn_check(cfg: dict, channels_last: bool, steps: int, slices: int, size: int, batch: int) -> float:
    """Mean L1 loss of the last 20 of `steps` training steps on synthetic layered discs."""
    from physdiff.models.train import train_prior

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    vols = []
    for _ in range(32):
        cy, cx, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.2, 0.3)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.float32)
        ring = ((yy - cy) ** 2 + (xx - cx) ** 2 < (0.5 * r) ** 2).astype(np.float32)
        vols.append(np.stack([0.4 * disc + (0.1 + 0.05 * k) * ring for k in range(slices)]))
    res = train_prior(np.array(vols), model_cfg=cfg, steps=steps, batch_size=batch, grad_accum=1, lr=1e-3,
                      warmup_steps=20, channels_last=channels_last, progress=False)
    return float(np.mean([loss for _, loss in res.loss_history[-20:]]))


def _unet_at(rev: str):
    """The `build_unet` of src/physdiff/models/unet.py at git revision `rev`, as a fresh module."""
    import importlib.util
    import tempfile

    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{rev}:src/physdiff/models/unet.py"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"unet_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_unet


def compare(rev: str, *, batch: int, slab: int, repeats: int, also: tuple[str, ...] = ()) -> None:
    """CPU seconds per training step of the U-Net at `rev` and of this tree's, interleaved in one run.

    Each revision in `also` adds a row: unet.py at that revision in the default setting (bf16,
    slice attention at 16 only), to show a later change against its parent in the same run.

    CPU time of this one-thread process (time.process_time), not wall time: other jobs on a
    shared machine then stretch neither side. The minimum over repeats is reported.
    """
    from contextlib import nullcontext

    model = {**BASE, "temporal_attn_resolutions": (32, 16)}  # config/config.yaml prior.model
    new = {**model, "image_size": 64}
    cases = {f"old: unet.py at {rev}": (_unet_at(rev), model, False),
             "new: this tree (image_size 64, conv-first upsampling)": (build_unet, new, False),
             "new + bf16 autocast": (build_unet, new, True),
             "new + slice attention at 16 only": (build_unet, {**new, "temporal_attn_resolutions": (16,)}, False),
             "new + bf16 + slice attention at 16 only": (build_unet, {**new, "temporal_attn_resolutions": (16,)}, True)}
    for other in also:
        cases[f"unet.py at {other} + bf16 + slice attention at 16 only"] = (
            _unet_at(other), {**new, "temporal_attn_resolutions": (16,)}, True)
    from physdiff.models.train import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        print("this CPU has no native bf16 (AVX512-BF16 or AMX): the bf16 rows are left out "
              "(emulated bf16 runs about 20x slower than float32)")
        cases = {name: case for name, case in cases.items() if not case[2]}
    steps = {}
    for name, (build, cfg, bf16) in cases.items():
        torch.manual_seed(0)
        net = build(cfg)
        opt, diff, gen = torch.optim.Adam(net.parameters(), lr=1e-4), GaussianDiffusion(), torch.Generator().manual_seed(0)
        x0 = torch.rand(batch, 1, slab, 64, 64) * 2 - 1

        def step(net=net, opt=opt, diff=diff, gen=gen, x0=x0, bf16=bf16) -> float:
            c0 = time.process_time()
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
                loss = diff.loss(net, x0, generator=gen)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return time.process_time() - c0

        step()  # warm-up
        steps[name] = (step, sum(p.numel() for p in net.parameters()), [])
    for _ in range(repeats):  # interleaved, so a burst of load hits every case alike
        for step, _, times in steps.values():
            times.append(step())
    base = min(next(iter(steps.values()))[2])
    print(f"\n## --compare: one optimiser step (batch {batch}, slabs of {slab} at 64x64), CPU s, min of {repeats}")
    print("| setting | params | CPU s/step | steps per CPU-second | speed-up |\n|---|---|---|---|---|")
    for name, (_, n, times) in steps.items():
        print(f"| {name} | {n / 1e6:.3f} M | {min(times):.3f} | {1 / min(times):.2f} | {base / min(times):.2f}x |", flush=True)


def lr_study_run(lr: float, warmup: int, steps: int, *, results: str = "results", partition: int = 0,
                 save: str | None = None, seed: int = 0, bf16: bool = False, temporal=(32, 16)) -> None:
    """Train MRI G=2 partition g for `steps` steps and print one row: lr, warm-up, validation loss, time."""
    from physdiff.models.train import save_model, train_prior
    from physdiff.results import Layout

    lay = Layout(results)
    lo, hi = 8 * partition, 8 * partition + 8
    train, val = np.load(lay.mri_split("train"))[:, lo:hi], np.load(lay.mri_split("val"))[:, lo:hi]
    cfg = {**BASE, "temporal_attn_resolutions": tuple(temporal), "image_size": train.shape[-1]}
    w0, c0 = time.perf_counter(), time.process_time()
    res = train_prior(train, model_cfg=cfg, steps=steps, batch_size=4, grad_accum=1, lr=lr, warmup_steps=warmup,
                      val_data=val, val_every=max(steps // 3, 1), seed=seed, progress=False, cpu_bf16=bf16)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if save:
        save_model(save, res)
    vals = " / ".join(f"{r[1]:.4f}" for r in res.val_history)
    last = res.val_history[-1]
    print(f"| {lr:g} | {warmup} | {steps} | {'bf16' if bf16 else 'fp32'}, slice attn {list(temporal)} | {len(train)}/{len(val)} | {vals} | "
          f"{' / '.join(f'{e:.3f}' for e in last[2:])} | "
          f"{np.mean([l for _, l in res.loss_history[-50:]]):.4f} | {wall:.0f} | {cpu:.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["default", "paper", "both"], default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slices", type=int, default=16, help="S of the full volume; slabs are S/2")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50, help="reverse steps for the sampling estimate")
    ap.add_argument("--variants", nargs="*", default=None, help="names from VARIANTS (default: all)")
    ap.add_argument("--paper-size", type=int, default=128, help="slice size of the paper-size model")
    ap.add_argument("--paper-train", action="store_true", help="also time a paper-size training step")
    ap.add_argument("--learn", type=int, default=0, help="training steps per variant for the learning check")
    ap.add_argument("--mem-batch", type=int, nargs="+", default=[1, 4], help="batch sizes for the memory table")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--compare", metavar="REV", default=None,
                    help="only compare training-step CPU time of unet.py at git revision REV with this tree's")
    ap.add_argument("--compare-also", metavar="REV", nargs="+", default=(),
                    help="with --compare: also time unet.py at these revisions in the default setting")
    ap.add_argument("--lr-study", type=float, nargs="+", default=None, metavar="LR",
                    help="only run the learning-rate study (MRI G=2 g=0 on the run's MRI volumes) for these rates")
    ap.add_argument("--results", default="results", help="with --lr-study: the run whose MRI volumes it trains on")
    ap.add_argument("--study-warmup", type=int, default=100)
    ap.add_argument("--study-steps", type=int, default=300)
    ap.add_argument("--study-bf16", action="store_true", help="bf16 autocast in the study runs")
    ap.add_argument("--study-temporal", type=int, nargs="+", default=[32, 16], help="slice-attention sizes")
    ap.add_argument("--study-partition", type=int, default=0, help="g of G=2 for the study runs")
    ap.add_argument("--study-save", default=None, help="write the (last) study model's model.pt here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare:
        compare(args.compare, batch=args.batch, slab=args.slices // 2, repeats=args.repeats, also=tuple(args.compare_also))
        return
    if args.lr_study:
        print("| lr | warm-up | steps | precision, model | train/val volumes | val eps L1 (EMA) at each check | at t=50/200/500/800 "
              "| train loss, last 50 | wall s | CPU s |\n|---|---|---|---|---|---|---|---|---|---|")
        for lr in args.lr_study:
            lr_study_run(lr, args.study_warmup, args.study_steps, results=args.results, partition=args.study_partition,
                         save=args.study_save, bf16=args.study_bf16, temporal=args.study_temporal)
        return
    slab = args.slices // 2
    print(f"torch {torch.__version__}, {args.threads} thread(s), CUDA: {torch.cuda.is_available()}")

    if args.size in ("default", "both"):
        names = args.variants or list(VARIANTS)
        print(f"\n## CPU default size: slabs of {slab} slices at 64x64, batch {args.batch}, "
              f"grad_accum {args.grad_accum}")
        print("| variant | params | s/micro-batch | s/optimiser step | s/1200 steps (min) | loss (learn) |")
        print("|---|---|---|---|---|---|")
        for name in names:
            extra, cl = VARIANTS[name]
            cfg = {**BASE, **extra}
            s_step, n = time_train_step(cfg, batch=args.batch, slices=slab, size=64, grad_accum=args.grad_accum,
                                        repeats=args.repeats, channels_last=cl)
            learned = f"{learn_check(cfg, cl, args.learn, slab, 64, args.batch):.4f}" if args.learn else "-"
            print(f"| {name} | {n / 1e6:.2f} M | {s_step / args.grad_accum:.3f} | {s_step:.3f} | "
                  f"{s_step * 1200 / 60:.1f} | {learned} |", flush=True)
        s_rev = time_sampling(BASE, partitions=2, slices=args.slices, size=64, steps=min(args.steps, 10))
        print(f"\nsampling, base, G=2 on CPU, S={args.slices} at 64x64: {s_rev:.3f} s/reverse step, "
              f"{s_rev * args.steps:.1f} s/volume at {args.steps} steps")

    if args.size in ("paper", "both"):
        ps = args.paper_size
        print(f"\n## paper size: dim 64, mults (1,2,4,8), 2 res blocks, slabs of {slab} at {ps}x{ps}")
        model = build_unet(PAPER).eval()
        n = sum(p.numel() for p in model.parameters())
        x = torch.randn(1, 1, slab, ps, ps)
        with torch.no_grad():
            model(x, torch.tensor([500]))
            t0 = time.perf_counter()
            model(x, torch.tensor([500]))
            fwd = time.perf_counter() - t0
        print(f"params {n / 1e6:.1f} M; forward, batch 1: {fwd:.2f} s; "
              f"{fwd * args.steps * 2:.0f} s/volume for G=2 at {args.steps} steps")
        if args.paper_train:
            s_step, _ = time_train_step(PAPER, batch=1, slices=slab, size=ps, grad_accum=1, repeats=1)
            print(f"training step, batch 1: {s_step:.2f} s")

    if not args.no_memory:
        print("\n## peak inference memory per device (fresh subprocess each)")
        print("| model | volume | batch | G=1 (S slices) | G=2 (S/2 slices, per device) | ratio |")
        print("|---|---|---|---|---|---|")
        cases = [("default", BASE, 64)] + ([("paper", PAPER, args.paper_size)] if args.size != "default" else [])
        for label, cfg, size in cases:
            for mb in args.mem_batch:
                full = peak_memory(cfg, args.slices, size, mb, args.threads)
                half = peak_memory(cfg, slab, size, mb, args.threads)
                ratio = half["growth_mb"] / full["growth_mb"]
                print(f"| {label} | {args.slices}x{size}x{size} | {mb} | {full['growth_mb']:.0f} MB "
                      f"(+{full['base_mb']:.0f} base) | {half['growth_mb']:.0f} MB (+{half['base_mb']:.0f} base) "
                      f"| {ratio:.2f} |", flush=True)
        print(f"(on {full['device']}; CPU figures are the growth of peak RSS (VmHWM, reset before) over one forward, the base is "
              f"the process before it: torch, weights, kernels)")


if __name__ == "__main__":
    main()
