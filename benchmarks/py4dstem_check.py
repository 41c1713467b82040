"""py4DSTEM's multislice ptychography as the 4D-STEM reference solver, scored as our baselines are.

    bash benchmarks/py4dstem_env.sh                      # once: .venv-py4dstem with py4DSTEM 0.14.18
    python benchmarks/py4dstem_check.py [--results results] [--test NAME ...] [--ood NAME ...] [--n 3]
                                        [--step-size X --n-iter N] [--out benchmarks/out/py4dstem]

What it does, in order:
1. Tuning, as `tune_stem_baseline` tunes our solvers (physdiff.recon.run): on the pipeline's
   validation samples (`recon.stem.tuning.n_val`, the first of each validation crystal), one run
   of --max-iter iterations per step size of --grid, extended past a winning edge and refined;
   the iteration count is the best prefix of the mean phase-projection SSIM, and the cap is
   doubled (at most --max-extend times) while the count sits on it. Saved to OUT/tuning.json and
   reused; --step-size with --n-iter skips it.
2. Reconstruction of each test sample (--test, default the first --n of the cubic test split in
   the pipeline's order) and OOD sample (--ood, the hexagonal crystals) through
   `physdiff.recon.run.reconstruct_stem`, the function the `reconstruct_baseline_stem` rule
   calls: so the score is ours exactly (SSIM of the phase projection sigma sum_s V_s against the
   ground truth, data range of the truth, each slice shifted to minimum 0 as our solvers'
   gauge="min" does, no affine fit). One JSON row per sample in OUT/{split}/{sample}.json
   (a row already there is reused unless --force).
3. A table: mean ± std SSIM and seconds per sample over the same samples, for py4DSTEM and for
   every method in --methods whose rows the pipeline wrote (the reconstruct_baseline_stem rule's
   metrics rows, `physdiff.results.Layout.recon`; `snakemake <that file>` writes a missing one).

How py4DSTEM sees a sample (the conversions live in `export_sample`, tested without py4DSTEM):
the same probe (our `MultisliceModel`'s, from energy, semi-angle and defocus, passed as the
initial probe and kept fixed), the same scan positions (kept fixed), the same slices (count and
thickness), the periodic cell as its object (no padding, py4DSTEM indexes patches modulo the
object), and the patterns on the full simulation grid, so that its object has our sampling:
pixels off the detector are zero in the data and left free by its detector_fourier_mask, as
our model leaves them. The solver is py4DSTEM's gradient descent on the amplitudes with the
whole scan as one batch (--batch for mini-batches) and object_type "potential" with positivity
(--object-type complex for a complex object, scored by its phase). Unlike our model and abTEM,
py4DSTEM band-limits neither transmission nor propagator. --forward-check prints py4DSTEM's
own data error at the true potential against V = 0, a check of these conventions.

py4DSTEM 0.14.18 needs numpy < 2, so it runs in .venv-py4dstem (benchmarks/py4dstem_env.sh)
on benchmarks/py4dstem_worker.py; a sample travels as a temporary .npz each way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from physdiff.config import load_config
from physdiff.data.plan import recon_order, stem_plan, stem_tuning_samples
from physdiff.data.stem_sim import load_sample
from physdiff.errors import InputError
from physdiff.io import save_json, save_npy
from physdiff.physics.multislice import MultisliceGeometry, MultisliceModel
from physdiff.physics.stem_loss import data_loss
from physdiff.recon import run
from physdiff.results import Layout

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "benchmarks" / "py4dstem_worker.py"
PYTHON = ROOT / ".venv-py4dstem" / "bin" / "python"
METHOD = "py4dstem"
OUR_METHODS = ["three_pie", "torchslice", "sparse_decomposition", "drift"]
LABELS = {METHOD: "py4DSTEM 0.14.18", "three_pie": "3PIE", "torchslice": "Torchslice",
          "sparse_decomposition": "sparse decomposition", "drift": "DRIFT"}


def export_sample(intensities, geometry: MultisliceGeometry, settings: dict, initial_phases=None) -> dict:
    """The arrays py4dstem_worker.py reads: our data and geometry in py4DSTEM's conventions.

    Patterns go back onto the full (H, W) simulation grid in unshifted FFT order, by the same
    crop indices our forward model reads them with; `fourier_mask` marks those pixels. The probe
    is our model's at r = 0 (centred on pixel 0), so sum |fft2(probe)|^2 = 1 as in the simulation.
    """
    model = MultisliceModel(geometry, device="cpu", dtype=torch.complex128)
    measured = np.asarray(intensities, np.float32)
    kx, ky = geometry.detector_gpts
    if measured.shape != (*geometry.scan_shape, kx, ky):
        raise InputError(f"intensities must have shape {(*geometry.scan_shape, kx, ky)}, got {measured.shape}")
    rows, cols = model.crop_x.numpy()[:, None], model.crop_y.numpy()[None, :]
    full = np.zeros((measured.shape[0] * measured.shape[1], *geometry.gpts), np.float32)
    full[:, rows, cols] = measured.reshape(-1, kx, ky)
    mask = np.zeros(geometry.gpts, bool)
    mask[rows, cols] = True
    probe = model.incident_waves(torch.zeros(1, 2, dtype=torch.float64))[0].numpy()
    out = {
        "intensities": full, "fourier_mask": mask, "probe": probe.astype(np.complex64),
        "positions": geometry.positions.reshape(-1, 2), "scan_shape": np.asarray(geometry.scan_shape),
        "extent": np.asarray(geometry.sampling) * np.asarray(geometry.gpts), "energy": np.float64(geometry.energy),
        "slice_thickness": np.asarray(geometry.slice_thickness, float), "settings": json.dumps(settings),
    }
    if initial_phases is not None:
        out["initial_phases"] = np.asarray(initial_phases, np.float32)
    return out


def potential_of(phases, sigma: float, gauge: str = "min") -> torch.Tensor:
    """Potential (S, H, W) in V·Å from per-slice phases in rad, in our solvers' gauge (slice minimum 0)."""
    v = torch.as_tensor(np.asarray(phases, np.float64) / sigma)
    return v - v.flatten(1).min(dim=1).values[:, None, None] if gauge == "min" else v


def call_worker(inputs: dict, *, python: str | os.PathLike = PYTHON, worker: str | os.PathLike = WORKER) -> dict:
    """Write `inputs` to a temporary .npz, run the worker on it with `python`, and read its output."""
    if not Path(python).exists():
        raise InputError(f"{python} not found: run `bash benchmarks/py4dstem_env.sh` first (or pass --python)")
    with tempfile.TemporaryDirectory(prefix="py4dstem-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, **inputs)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env.pop("PYTHONPATH", None)  # our src must not shadow the numpy < 2 venv's packages
        done = subprocess.run([str(python), str(worker), str(src), str(dst)], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"py4DSTEM worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        with np.load(dst, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def py4dstem(intensities, geometry: MultisliceGeometry, *, v0=None, n_iter: int = 30, step_size: float = 0.5,
             object_type: str = "potential", positivity: bool = True, max_batch_size: int | None = None,
             seed: int = 0, form: str = "amplitude", gauge: str = "min", callback=None, progress: bool = True,
             device=None, python: str | os.PathLike = PYTHON, worker: str | os.PathLike = WORKER):
    """py4DSTEM's multislice ptychography in our solvers' call style, V, info = method(intensities, geometry, ...).

    Starts from `v0`, a potential (S, H, W) in V·Å (default None: V = 0, py4DSTEM's own start).
    Known probe and positions, gradient descent on the amplitudes (our Eq. 2 in amplitude form:
    `form` is accepted for the shared call style and must be "amplitude"). `callback(iteration, V,
    loss)` sees every iterate (py4DSTEM then stores them all); its loss is py4DSTEM's error, in
    its own normalisation. info["final_loss"] is our Eq. (2) of the returned potential, as the
    other rows report; info["solver_seconds"] is the worker's preprocess + reconstruct time.
    """
    if form != "amplitude":
        raise InputError(f"py4DSTEM fits the amplitudes; form {form!r} is not available")
    settings = {"num_iter": int(n_iter), "step_size": float(step_size), "object_type": object_type,
                "positivity": bool(positivity), "max_batch_size": max_batch_size, "seed": int(seed),
                "store_iterations": callback is not None}
    start = None if v0 is None else geometry.sigma * np.asarray(v0.cpu() if torch.is_tensor(v0) else v0, np.float64)
    result = call_worker(export_sample(intensities, geometry, settings, start), python=python, worker=worker)
    errors = [float(e) for e in result["errors"]]
    if callback is not None:
        for i, phases in enumerate(result["phases_iterations"], start=1):
            callback(i, potential_of(phases, geometry.sigma, gauge).float(), errors[i - 1])
    potential = potential_of(result["phases"], geometry.sigma, gauge).float()
    finite = bool(torch.isfinite(potential).all())
    model = MultisliceModel(geometry, device="cpu")
    info = {"method": METHOD, "iterations": len(errors), "loss_history": errors, "best_iteration": len(errors),
            "diverged": not finite, "solver_seconds": float(result["seconds"]),
            "final_loss": data_loss(model, potential, intensities) if finite else float("nan"),
            "stop_rule": f"fixed iteration count n_iter={n_iter} (py4DSTEM gradient descent, step {step_size})"}
    return potential, info


LAST_INFO: dict = {}


def register(python: str | os.PathLike = PYTHON) -> None:
    """Make `py4dstem` a 4D-STEM method of physdiff.recon.run, so its tuning and scoring are the pipeline's.

    The info of its last run stays in LAST_INFO (reconstruct_stem's row leaves out solver_seconds).
    """
    def method(*args, **kwargs):
        potential, info = py4dstem(*args, python=python, **kwargs)
        LAST_INFO.clear()
        LAST_INFO.update(info)
        return potential, info
    run.STEM_BASELINES[METHOD] = method
    run.STEM_TUNED_PARAM[METHOD] = "step_size"


def forward_check(sample: dict, python: str | os.PathLike = PYTHON) -> tuple[float, float]:
    """py4DSTEM's data error (its normalisation) at the true potential and at V = 0: a conventions check."""
    geometry = MultisliceGeometry.from_sample(sample)
    truth = geometry.sigma * np.asarray(sample["potential"], np.float64)
    settings = {"num_iter": 1, "step_size": 0.0, "object_type": "potential", "positivity": False}
    errors = [float(call_worker(export_sample(sample["intensities"], geometry, settings, start), python=python)
                    ["errors"][0]) for start in (truth, np.zeros_like(truth))]
    return errors[0], errors[1]


def mean_std(values) -> str:
    values = np.asarray(values, float)
    return f"{values.mean():.3f} ± {values.std():.3f}" if len(values) else ""


def label(method: str, found: list[dict]) -> str:
    """A row's name; py4DSTEM's carries its step size and iteration count."""
    if method != METHOD and not method.startswith(METHOD + ":"):
        return LABELS.get(method, method)
    steps = sorted({(r["param_step_size"], r["iterations"]) for r in found})
    return f"{LABELS[METHOD]} ({'; '.join(f'step {s:g}, {n} iterations' for s, n in steps) or method})"


def table(rows: dict[str, dict[str, list[dict]]], methods: list[str]) -> str:
    """Markdown: one line per method, SSIM mean ± std (N) and wall seconds per sample for each sample set.

    py4DSTEM's seconds are the whole call (export, the worker's start and imports, the solver),
    with the solver's own time in brackets.
    """
    sets = list(rows)
    lines = ["| method | " + " | ".join(f"{s} SSIM | {s} s/sample" for s in sets) + " |",
             "|---|" + "---|---|" * len(sets)]
    for method in methods:
        cells = []
        for s in sets:
            found = rows[s].get(method, [])
            seconds = f"{np.mean([r['wall_s'] for r in found]):.1f}" if found else ""
            if found and "solver_s" in found[0]:
                seconds += f" ({np.mean([r['solver_s'] for r in found]):.1f})"
            cells += [f"{mean_std([r['ssim'] for r in found])} (N={len(found)})" if found else "not run", seconds]
        found_any = [r for s in sets for r in rows[s].get(method, [])]
        lines.append(f"| {label(method, found_any)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="the pipeline's results folder (samples and our rows)")
    ap.add_argument("--config", default="config/config.yaml", help="the config that planned the samples")
    ap.add_argument("--test", nargs="*", help="cubic test samples (default: the first --n in the pipeline's order)")
    ap.add_argument("--ood", nargs="*", help="hexagonal OOD samples (default: the first --n in the pipeline's order)")
    ap.add_argument("--n", type=int, default=3, help="samples per set when --test / --ood are not given")
    ap.add_argument("--out", default="benchmarks/out/py4dstem", help="py4DSTEM's rows, tuning and reconstructions")
    ap.add_argument("--step-size", type=float, help="py4DSTEM's step size (with --n-iter: no tuning)")
    ap.add_argument("--n-iter", type=int, help="py4DSTEM's iterations (with --step-size: no tuning)")
    ap.add_argument("--grid", type=float, nargs="+", default=[0.1, 0.3, 1.0], help="step sizes the tuning starts from")
    ap.add_argument("--max-iter", type=int, default=30, help="the tuning's first iteration cap")
    ap.add_argument("--max-extend", type=int, default=3, help="grid extensions and cap doublings of the tuning")
    ap.add_argument("--refine", type=int, help="refinement rounds of the tuning (default: recon.stem.tuning.refine)")
    ap.add_argument("--object-type", choices=["potential", "complex"], default="potential")
    ap.add_argument("--no-positivity", action="store_true", help="let the potential go negative")
    ap.add_argument("--batch", type=int, default=None, help="positions per gradient step (default: the whole scan)")
    ap.add_argument("--methods", nargs="+", default=OUR_METHODS, help="our methods to put in the table")
    ap.add_argument("--compare", nargs="*", default=[], help="--out folders of other py4DSTEM settings to tabulate")
    ap.add_argument("--python", default=str(PYTHON), help="the py4DSTEM venv's interpreter")
    ap.add_argument("--forward-check", action="store_true", help="print py4DSTEM's error at the truth and at V = 0")
    ap.add_argument("--table-only", action="store_true", help="reconstruct nothing; tabulate the rows on disk")
    ap.add_argument("--force", action="store_true", help="recompute rows already in --out")
    args = ap.parse_args()

    cfg = load_config(args.config)
    plan = stem_plan(cfg)
    lay, out = Layout(args.results), Path(args.out)
    chosen = {"test": args.test, "ood": args.ood}
    for split in chosen:
        if chosen[split] is None:
            chosen[split] = recon_order([r for r in plan if r["split"] == split])[:args.n]
    register(args.python)
    settings = {"object_type": args.object_type, "positivity": not args.no_positivity,
                "max_batch_size": args.batch}

    if args.forward_check:
        for split, names in chosen.items():
            for name in names:
                truth_error, zero_error = forward_check(load_sample(lay.stem_sample(split, name)), args.python)
                print(f"{split}/{name}: py4DSTEM error at the truth {truth_error:.3e}, at V = 0 {zero_error:.3e}")

    if not args.table_only:
        tuning_path = out / "tuning.json"
        if args.step_size is not None and args.n_iter is not None:
            tuned = {"method": METHOD, "param": "step_size", "value": args.step_size, "n_iter": args.n_iter}
        elif tuning_path.exists() and not args.force:
            tuned = json.loads(tuning_path.read_text())
        else:
            names = stem_tuning_samples(plan, cfg["recon"]["stem"]["tuning"]["n_val"])
            start = time.perf_counter()
            tuned = run.tune_stem_baseline([load_sample(lay.stem_sample("val", n)) for n in names], method=METHOD,
                                           grid=args.grid, max_iter=args.max_iter, settings=settings,
                                           max_extend=args.max_extend,
                                           refine=cfg["recon"]["stem"]["tuning"]["refine"] if args.refine is None
                                           else args.refine)
            tuned.update(samples=names, settings=settings, seconds=time.perf_counter() - start)
            save_json(tuning_path, tuned)
        print(f"py4DSTEM settings: step size {tuned['value']:g}, {tuned['n_iter']} iterations", flush=True)
        params = run.stem_params(METHOD, settings, tuned)
        for split, names in chosen.items():
            for name in names:
                path = out / split / f"{name}.json"
                if path.exists() and not args.force:
                    continue
                if not lay.stem_sample(split, name).exists():
                    print(f"{split}/{name}: no sample yet (snakemake {lay.stem_sample(split, name)})", flush=True)
                    continue
                sample = load_sample(lay.stem_sample(split, name))
                potential, row = run.reconstruct_stem(sample, method=METHOD, params=params)
                row = {"modality": "stem", "dataset": "cubic" if split == "test" else "hexagonal", "sample": name,
                       "mask": "full", "crystal": str(sample["name"]), **row,
                       "solver_s": LAST_INFO["solver_seconds"]}
                save_npy(path.with_suffix(".npy"), potential)
                save_json(path, row)
                print(f"{split}/{name}: SSIM {row['ssim']:.3f} in {row['wall_s']:.1f} s", flush=True)

    if (out / "tuning.json").exists():
        tuned = json.loads((out / "tuning.json").read_text())
        for r in tuned.get("table", []):
            print(f"tuning on {', '.join(tuned.get('samples', []))}: step size {r['value']:.3g}, validation SSIM "
                  f"{r['ssim_mean']:.3f} at its best count {r['n_iter']} (cap {tuned['max_iter']})")
    rows: dict[str, dict[str, list[dict]]] = {}
    folders = {METHOD: out, **{f"{METHOD}:{d}": Path(d) for d in args.compare}}
    for split, kind in (("test", "cubic"), ("ood", "hexagonal")):
        print(f"{kind}: {', '.join(chosen[split])}")
        found: dict[str, list[dict]] = {}
        for method in [*folders, *args.methods]:
            for name in chosen[split]:
                path = folders[method] / split / f"{name}.json" if method in folders \
                    else lay.recon("stem", split, method, name, suffix=".json")
                if path.exists():
                    found.setdefault(method, []).append(json.loads(path.read_text()))
        rows[kind] = found
    methods = [*folders, *args.methods]
    print(table(rows, methods))
    names = [label(m, [r for found in rows.values() for r in found.get(m, [])]) for m in methods]
    for key, fmt, what in (("ssim", ".3f", "SSIM"), ("final_loss", ".3g", "Eq. (2) data loss at the end")):
        print(f"\n{what}, per sample:\n| sample | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(methods))
        for kind, found in rows.items():
            for name in chosen["test" if kind == "cubic" else "ood"]:
                got = [next((r[key] for r in found.get(m, []) if r["sample"] == name), None) for m in methods]
                print(f"| {name} | " + " | ".join("" if v is None else format(v, fmt) for v in got) + " |")


if __name__ == "__main__":
    sys.exit(main())
