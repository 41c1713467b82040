"""The CUDA paths against the CPU ones on the same inputs, and what a GPU gives: run where CUDA is.

Usage (after the default pipeline has trained the priors and tuned DART):
    python benchmarks/cuda_paths.py [--results results] [--volumes 3] [--train-steps 300]

1. Agreement, float32 with TF32 off, the same inputs on both devices:
   * MRI data consistency (Eq. 4) and the multislice forward model of a 4D-STEM test sample
     with the gradient of its data loss (Eq. 5): max |CUDA - CPU| relative to the CPU's max;
   * one U-Net eps of a trained partition model; 20 DDIM steps (eta 0) with the two G = 2
     partition models and overlap seams;
   * DART (the tuned settings) on MRI test volume 0 and 4D-STEM test sample 0: SSIM on each.
2. Speed on the GPU: DART seconds per volume and peak CUDA memory with G = 1 and G = 2 models
   (both partitions on the one GPU here; round robin over GPUs where there are several),
   4D-STEM DART and DRIFT per sample, and training steps per second of the config's model on
   the MRI G = 2 slabs (bf16 autocast, as the trainer does on CUDA) and of the paper's size.
3. `--parts periodic [--stem-models g0.pt g1.pt]`: the periodic 4D-STEM prior (circular padding):
   U-Net eps and 20 DDIM steps with plateau seams against the CPU, the eps of a laterally rolled
   input against the rolled eps, DRIFT's lateral alignment of one candidate on both devices, and
   training steps per second on a periodic slab with random lateral shifts. It needs only the
   run's 4D-STEM validation samples, scale and training potentials besides the models.
4. `--parts solvers` (needs no run): the three 4D-STEM baselines on a small CoPt3 case simulated
   with abTEM (2 x 2 x 2 cells, 64^2 grid, 4 slices, 16 x 16 scan), each at the settings the
   pipeline tuned: complex64 against complex128 on the CPU, and CUDA against the CPU at both
   precisions. A solver whose complex64 result moves far more than float32 rounding takes a
   decision on rounding noise (3PIE's phase of a zero far field, fixed; the amplitude loss's
   direction where a modelled intensity is zero, not yet).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from physdiff.config import mri_problem_config, stem_problem_config, validate_config
from physdiff.data.stem_sim import load_sample
from physdiff.data.transforms import load_transform
from physdiff.models.sampling import reverse_diffusion
from physdiff.models.train import train_prior
from physdiff.physics.mri import data_consistency, simulate_kspace
from physdiff.physics.multislice import MultisliceGeometry, MultisliceModel
from physdiff.physics.stem_loss import loss_and_grad
from physdiff.recon.dart import dart
from physdiff.recon.run import reset_peak_memory
from physdiff.recon.run_prior import build_problem, load_partition_models, run_dart, run_drift, score
from physdiff.results import DEFAULT_MRI_MASK, Layout

PAPER = {"dim": 64, "dim_mults": (1, 2, 4, 8), "res_blocks": 2, "attn_resolutions": (16,), "temporal_attn": True}


def rel(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = (torch.as_tensor(np.asarray(v.detach().cpu() if torch.is_tensor(v) else v)) for v in (a, b))
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


DEV = "cuda"  # --device cpu only smoke-tests this script where there is no GPU


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def cuda_peak_mb() -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if DEV == "cuda" else float("nan")


def agreement(lay: Layout, cfg: dict, stem_cfg: dict) -> None:
    print("## CUDA against CPU (float32, TF32 off): max |CUDA - CPU| / max |CPU|")
    vol = np.load(lay.mri_split("test"), mmap_mode="r")[0].astype(np.float32)
    mask = np.load(lay.mri_mask(DEFAULT_MRI_MASK))
    y = simulate_kspace(vol, mask, noise_std=cfg["noise_std"], seed=0)
    x = torch.rand(vol.shape, generator=torch.Generator().manual_seed(0)).to(torch.complex64)
    out = {d: data_consistency(x.to(d), torch.from_numpy(y).to(d), mask, 0.7) for d in ("cpu", DEV)}
    print(f"MRI data consistency (lam 0.7), {vol.shape}: {rel(out[DEV], out['cpu']):.2e}")

    sample = load_sample(lay.stem_samples("test")[0])
    geometry = MultisliceGeometry.from_sample(sample)
    potential = torch.from_numpy(np.asarray(sample["potential"], np.float32))
    target = torch.from_numpy(np.asarray(sample["intensities"], np.float32))
    got = {}
    for d in ("cpu", DEV):
        model = MultisliceModel(geometry, device=d)
        got[d] = (model.forward(potential.to(d)),) + tuple(loss_and_grad(model, 0.9 * potential.to(d), target.to(d)))
    print(f"multislice forward, {sample['name']} {tuple(potential.shape)}: {rel(got[DEV][0], got['cpu'][0]):.2e}; "
          f"loss {rel(got[DEV][1], got['cpu'][1]):.2e}; gradient {rel(got[DEV][2], got['cpu'][2]):.2e}")

    models = load_partition_models(lay.prior_models("mri", 2))
    xt = torch.randn(1, 1, 8, 64, 64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([400])
    with torch.no_grad():
        cpu = models[0].cpu()(xt, t)
        gpu = models[0].to(DEV)(xt.to(DEV), t.to(DEV))
    print(f"U-Net eps (MRI G=2, g=0): {rel(gpu, cpu):.2e}")
    vols = {d: reverse_diffusion(models, (1, 16, 64, 64), steps=20, eta=0.0, seed=3, devices=[d, d], seam="overlap",
                                 progress=False) for d in ("cpu", DEV)}
    print(f"20 DDIM steps, eta 0, G=2 with overlap seams: {rel(vols[DEV], vols['cpu']):.2e}")

    settings = json.loads(lay.tuning("mri", "dart").read_text())["settings"]
    problem = build_problem("mri", cfg, volume=vol, mask=mask, seed=cfg["seed"],
                            solver_tuning=lay.tuning("mri", cfg["solver"]))
    for d in ("cpu", DEV):
        r = dart(models, problem, sampler=settings["sampler"], steps=settings["steps"], eta=settings["eta"],
                 correction=settings["correction"], seed=cfg["seed"], devices=[d, d], seam=settings["seam"],
                 progress=False)
        print(f"MRI DART {settings} on {d}: SSIM {score('mri', r.volume, vol)['ssim']:.4f}, {r.seconds:.1f} s")
    smodels = load_partition_models(lay.prior_models("stem", 2))
    ssettings = json.loads(lay.tuning("stem", "dart").read_text())["settings"]
    transform = load_transform(lay.stem_scale())
    for d in ("cpu", DEV):
        sp = build_problem("stem", stem_cfg, sample=sample, transform=transform, device=d,
                           solver_tuning=lay.tuning("stem", stem_cfg["solver"]))
        r = dart(smodels, sp, sampler=ssettings["sampler"], steps=ssettings["steps"], eta=ssettings["eta"],
                 correction=ssettings["correction"], seed=0, devices=[d, d], seam=ssettings.get("seam", "none"),
                 progress=False)
        s = score("stem", r.volume, np.asarray(sample["potential"], np.float32), float(sample["sigma"]))["ssim"]
        print(f"4D-STEM DART {ssettings} on {d}: SSIM {s:.4f}, {r.seconds:.1f} s")


def periodic(lay: Layout, stem_cfg: dict, full_cfg: dict, model_paths: list[str], n_steps: int) -> None:
    """The periodic 4D-STEM prior (circular padding, lateral shifts) and DRIFT's alignment, CUDA against CPU."""
    from physdiff.config import prior_model_config

    print("\n## periodic 4D-STEM prior and DRIFT alignment: max |CUDA - CPU| / max |CPU|")
    models = load_partition_models(model_paths)
    data = np.load(lay.stem_prior_data("train"), mmap_mode="r")  # (N, S, H, W), the prior's units
    shape = tuple(data.shape[1:])
    xt = torch.randn(1, 1, shape[0] // 2, *shape[1:], generator=torch.Generator().manual_seed(2))
    t = torch.tensor([300])
    with torch.no_grad():
        cpu = models[0].cpu()(xt, t)
        gpu = models[0].to(DEV)(xt.to(DEV), t.to(DEV))
        shifted = models[0].to(DEV)(torch.roll(xt, (8, -12), dims=(-2, -1)).to(DEV), t.to(DEV))
    print(f"U-Net eps (circular padding): {rel(gpu, cpu):.2e}; on {DEV}, eps of a rolled input against the "
          f"rolled eps (shift 8, -12 px: whole pixels at every level): {rel(shifted, torch.roll(gpu, (8, -12), dims=(-2, -1))):.2e}")
    vols = {d: reverse_diffusion(models, (1, *shape), steps=20, eta=0.0, seed=3, devices=[d, d], seam="plateau",
                                 progress=False) for d in ("cpu", DEV)}
    print(f"20 DDIM steps, eta 0, periodic G=2, plateau seams: {rel(vols[DEV], vols['cpu']):.2e}")
    aligned = {}
    sample = load_sample(lay.stem_samples("val")[0])
    for d in ("cpu", DEV):
        problem = build_problem("stem", stem_cfg, sample=sample, device=d,
                                transform=load_transform(lay.stem_scale()))
        aligned[d] = problem.align(problem.transform.decode(vols["cpu"].numpy()[0]))
    print(f"DRIFT alignment of one candidate: {rel(aligned[DEV], aligned['cpu']):.2e} (0 = the same shift chosen)")
    train = data[:16, :shape[0] // 2]
    model_cfg = prior_model_config(full_cfg, "stem")
    t0 = time.perf_counter()
    r = train_prior(np.asarray(train), model_cfg={**model_cfg, "image_size": train.shape[-1]}, steps=n_steps,
                    batch_size=full_cfg["prior"]["train"]["batch_size"], lr=full_cfg["prior"]["train"]["lr"],
                    augment_rolls=True, device=DEV, progress=False)
    sync()
    losses = [v for _, v in r.loss_history]
    print(f"training, periodic 4D-STEM slab with lateral shifts on {DEV}: {n_steps / (time.perf_counter() - t0):.1f} "
          f"steps/s, loss first 20 {np.mean(losses[:20]):.4f} -> last 20 {np.mean(losses[-20:]):.4f}, "
          f"finite {bool(np.isfinite(losses).all())}", flush=True)


def speed(lay: Layout, cfg: dict, stem_cfg: dict, full_cfg: dict, n_vol: int, train_steps: int,
          dart_steps: list[int], parts: list[str]) -> None:
    print(f"\n## speed on {DEV}")
    test = np.load(lay.mri_split("test"), mmap_mode="r")
    mask = np.load(lay.mri_mask(DEFAULT_MRI_MASK))
    settings = json.loads(lay.tuning("mri", "dart").read_text())["settings"]
    print("| MRI DART | steps | s/volume | peak CUDA MB | SSIM |\n|---|---|---|---|---|")
    for G in (1, 2) if "mri" in parts else ():
        models = load_partition_models(lay.prior_models("mri", G))
        for steps in dict.fromkeys([settings["steps"], *dart_steps]):
            rows = []
            for i in range(n_vol):
                vol = test[i].astype(np.float32)
                problem = build_problem("mri", cfg, volume=vol, mask=mask, seed=cfg["seed"] + i,
                                        solver_tuning=lay.tuning("mri", cfg["solver"]))
                rows.append(run_dart(models, problem, vol, modality="mri", settings={**settings, "steps": steps},
                                     seed=cfg["seed"] + i, progress=False)[1])
            print(f"| G={G} | {steps} | {np.mean([r['wall_s'] for r in rows]):.2f} | "
                  f"{max(r['peak_mem_mb'] for r in rows):.0f} | {np.mean([r['ssim'] for r in rows]):.4f} |", flush=True)

    smodels = load_partition_models(lay.prior_models("stem", 2))
    ssettings = json.loads(lay.tuning("stem", "dart").read_text())["settings"]
    transform = load_transform(lay.stem_scale())
    n_iter = json.loads(lay.tuning("stem", "drift").read_text())["n_iter"]
    for path in lay.stem_samples("test")[:n_vol] if "stem" in parts else ():
        sample = load_sample(path)
        truth, sigma = np.asarray(sample["potential"], np.float32), float(sample["sigma"])
        sp = build_problem("stem", stem_cfg, sample=sample, transform=transform,
                           solver_tuning=lay.tuning("stem", stem_cfg["solver"]))
        _, row, _ = run_dart(smodels, sp, truth, modality="stem", settings=ssettings, seed=0, sigma=sigma,
                             progress=False)
        t0 = time.perf_counter()
        cands = reverse_diffusion(smodels, (4, *truth.shape), steps=50, seed=0, progress=False).numpy()
        t_gen = time.perf_counter() - t0
        _, drows, _ = run_drift(transform.decode(cands), sp, truth, modality="stem",
                                n_iter=n_iter, sigma=sigma, progress=False)
        print(f"4D-STEM {sample['name']} {truth.shape}: DART {row['wall_s']:.1f} s, peak {row['peak_mem_mb']:.0f} MB, "
              f"SSIM {row['ssim']:.3f}; 4 candidates {t_gen:.1f} s; DRIFT (K={n_iter}) {drows[0]['wall_s']:.1f} s, "
              f"twin {drows[1]['wall_s']:.1f} s", flush=True)

    tr = full_cfg["prior"]["train"]
    train = np.load(lay.mri_split("train"))[:, :8]
    for label, model_cfg, data in (("config model, MRI G=2 slab 8x64x64", full_cfg["prior"]["model"], train),
                                   ("paper size, slab 8x128x128", PAPER,
                                    np.repeat(np.repeat(train, 2, axis=-1), 2, axis=-2))) if "train" in parts else ():
        for batch in (tr["batch_size"], 16):
            t0 = time.perf_counter()
            r = train_prior(data, model_cfg={**model_cfg, "image_size": data.shape[-1]}, steps=train_steps,
                            batch_size=batch, grad_accum=1, lr=tr["lr"], device=DEV, progress=False)
            sync()
            wall = time.perf_counter() - t0
            print(f"training, {label}, batch {batch}: {train_steps / wall:.1f} steps/s "
                  f"({wall:.1f} s for {train_steps}, first steps included); peak CUDA "
                  f"{cuda_peak_mb():.0f} MB; last-50 loss "
                  f"{np.mean([v for _, v in r.loss_history[-50:]]):.4f}", flush=True)
            reset_peak_memory(DEV)


def solvers() -> None:
    import abtem
    import ase
    from abtem.core.energy import energy2sigma, energy2wavelength

    from physdiff.recon.stem_baselines import sparse_decomposition, three_pie, torchslice

    cell = ase.Atoms("CoPt3", scaled_positions=[(0, 0, 0), (.5, .5, 0), (.5, 0, .5), (0, .5, .5)],
                     cell=[3.85] * 3, pbc=True) * (2, 2, 2)
    with abtem.config.set({"dask.lazy": False}):
        potential = abtem.Potential(cell, gpts=64, slice_thickness=1.925)
        built = potential.build()
        positions = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, gpts=(16, 16),
                                   potential=potential).get_positions()
    geometry = MultisliceGeometry(energy=200e3, semiangle=20.0, defocus=0.0, sampling=built.sampling,
                                  gpts=built.gpts, slice_thickness=built.slice_thickness, sigma=energy2sigma(200e3),
                                  wavelength=energy2wavelength(200e3), positions=positions, max_angle="valid")
    truth = built.array.astype(np.float32)
    intensities = MultisliceModel(geometry, device="cpu").forward(torch.from_numpy(truth))
    runs = {"3PIE, 40 sweeps, object step 0.0164": lambda **kw: three_pie(intensities, geometry, n_iter=40,
                                                                          step_object=0.0164, progress=False, **kw),
            "Torchslice, 22 iterations, lr 1.64": lambda **kw: torchslice(intensities, geometry, n_iter=22, lr=1.64,
                                                                           progress=False, **kw),
            "sparse decomposition, 20 sweeps, weight 0": lambda **kw: sparse_decomposition(
                intensities, geometry, n_iter=20, sparsity=0.0, progress=False, **kw)}
    print(f"## 4D-STEM baselines on CoPt3 {truth.shape}, {len(positions)} positions: max |a - b| / max |b|, "
          "SSIM of the phase projection, seconds")
    for name, run in runs.items():
        got, secs = {}, {}
        for d in dict.fromkeys(("cpu", DEV)):  # once on the CPU for the --device cpu smoke test
            for dtype in (torch.complex64, torch.complex128):
                sync()
                start = time.perf_counter()
                got[d, dtype] = run(device=d, dtype=dtype)[0].numpy()
                sync()
                secs[d, dtype] = time.perf_counter() - start
        ssim = {key: score("stem", v, truth, geometry.sigma)["ssim"] for key, v in got.items()}
        c64, c128 = torch.complex64, torch.complex128
        print(f"{name}: CPU complex64 vs complex128 {rel(got['cpu', c64], got['cpu', c128]):.2e}; "
              f"{DEV} vs CPU complex64 {rel(got[DEV, c64], got['cpu', c64]):.2e}, complex128 "
              f"{rel(got[DEV, c128], got['cpu', c128]):.2e}; SSIM CPU {ssim['cpu', c64]:.4f} / {ssim['cpu', c128]:.4f}, "
              f"{DEV} {ssim[DEV, c64]:.4f} / {ssim[DEV, c128]:.4f}; complex64 {secs['cpu', c64]:.2f} s CPU, "
              f"{secs[DEV, c64]:.2f} s {DEV}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="the pipeline's results folder")
    ap.add_argument("--volumes", type=int, default=3, help="test volumes / samples per speed figure")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--dart-steps", type=int, nargs="*", default=[200, 1000], help="MRI DART reverse steps, beside the tuned")
    ap.add_argument("--parts", nargs="+", choices=["agreement", "mri", "stem", "train", "periodic", "solvers"],
                    default=["agreement", "mri", "stem", "train", "periodic", "solvers"])
    ap.add_argument("--stem-models", nargs="+", default=None,
                    help="the periodic part's 4D-STEM partition models (default: the run's G = 2 models)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu only smoke-tests the script (CPU against CPU) where there is no GPU")
    args = ap.parse_args()
    global DEV
    DEV = args.device
    if DEV == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/cuda_paths.py needs a CUDA device (torch.cuda.is_available() is False)")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    full = validate_config(yaml.safe_load(Path("config/config.yaml").read_text()))
    stem_cfg = stem_problem_config(full)
    name = torch.cuda.get_device_name() if DEV == "cuda" else "CPU smoke test"
    print(f"torch {torch.__version__}, {name}, {torch.cuda.device_count()} GPU(s)")
    lay = Layout(args.results)
    if "solvers" in args.parts:
        solvers()
    if "agreement" in args.parts:
        agreement(lay, mri_problem_config(full), stem_cfg)
    if "periodic" in args.parts:
        periodic(lay, stem_cfg, full, args.stem_models or lay.prior_models("stem", 2), args.train_steps)
    if set(args.parts) & {"mri", "stem", "train"}:
        speed(lay, mri_problem_config(full), stem_cfg, full, args.volumes, args.train_steps, args.dart_steps,
              args.parts)


if __name__ == "__main__":
    main()
