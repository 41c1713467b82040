"""DART entered part-way (`recon.dart.start`): validation SSIM and robustness to real T1 scans.

    python benchmarks/dart_start.py [--results results] [--starts 1 0.6 0.4 0.3 0.2] [--n-val 4]
                                    [--override '{"correction": "x0", "eta": 1.0}'] [--threads 1]

For each start fraction, DART (the settings tune_dart chose, or the config's `recon.dart` before
tune_dart has run, with --override merged in, and the start) reconstructs
- the first --n-val MRI validation volumes, measured as tune_dart measures them (the mask
  `recon.dart.mri_tune_mask`, the same noise seeds), and
- the real T1 volumes that nibabel and nilearn ship (`benchmarks/real_mri.py`), measured with the
  same mask: robustness to a contrast and anatomy the prior never saw.
It prints the mean validation SSIM ± std, each real volume's SSIM and the seconds per volume,
then zero-filled and CS (at the weight tuned for the mask) on the real volumes for reference.
It chooses nothing and reads no test volume.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from physdiff.recon.run_prior import tuning_file
from physdiff.config import mri_problem_config, validate_config
from physdiff.data.mri_prep import preprocess_volume
from physdiff.metrics.ssim import ssim_volume
from physdiff.recon.run_prior import build_problem, run_dart, validation_problems
from physdiff.workflow import set_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_mri import baseline, packaged_volumes, partition_models  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--starts", type=float, nargs="+", default=[1.0, 0.6, 0.4, 0.3, 0.2])
    ap.add_argument("--n-val", type=int, default=4)
    ap.add_argument("--override", default="{}", help="JSON merged into tune_dart's settings")
    ap.add_argument("--models", nargs="*", default=None, help="partition model files (default: the pipeline's)")
    ap.add_argument("--no-real", action="store_true", help="validation volumes only")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        set_threads(args.threads)
    res = Path(args.results)
    cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    rc, mri = cfg["recon"], cfg["mri"]
    mask_name = rc["dart"]["mri_tune_mask"]
    mask = np.load(res / f"data/mri/masks/{mask_name}.npy")
    G, models = partition_models(res, cfg, args.models)
    tuned = tuning_file(res, "mri", "dart")
    base = (json.loads(tuned.read_text())["settings"] if tuned.is_file()
            else {k: rc["dart"][k] for k in ("sampler", "steps", "eta", "correction", "n_samples", "seam")})
    settings = {**base, **json.loads(args.override)}
    val = validation_problems(res, cfg, "mri", args.n_val, solver_tuning=False)
    real = {} if args.no_real else {
        name: preprocess_volume(raw, n_slices=mri["n_slices"], size=mri["size"], margin=mri["crop_margin"])
        for name, raw in packaged_volumes().items()}
    # measured once, as real_mri.py measures them; DART resets a problem's state on every run
    real_problems = {name: build_problem("mri", mri_problem_config(cfg), volume=truth, mask=mask, seed=cfg["seed"])
                     for name, truth in real.items()}
    print(f"mask {mask_name}, G = {G}, DART {settings}; {len(val)} validation volumes, real: {list(real)}", flush=True)
    header = "| " + " | ".join(["start", "validation SSIM", *real, "s per volume"]) + " |"
    print(header + "\n|" + "---|" * (header.count("|") - 1), flush=True)
    for start in args.starts:
        run = {**settings, "start": start}
        tic, scores = time.perf_counter(), []
        for i, (problem, truth, _) in enumerate(val):
            scores.append(run_dart(models, problem, truth, modality="mri", settings=run, seed=cfg["seed"] + i,
                                   progress=False)[1]["ssim"])
        cells = [f"{np.mean(scores):.4f} ± {np.std(scores):.4f}"]
        for name, truth in real.items():
            row = run_dart(models, real_problems[name], truth, modality="mri", settings=run, seed=cfg["seed"],
                           progress=False)[1]
            cells.append(f"{row['ssim']:.3f}")
        seconds = (time.perf_counter() - tic) / (len(val) + len(real))
        print(f"| {start:g} | " + " | ".join(cells) + f" | {seconds:.1f} |", flush=True)
    for method in ("zero_filled", "cs_l1_wavelet") if real else ():
        cells = [f"{n} {ssim_volume(baseline(method, real_problems[n].y, mask, res=res, mask_name=mask_name, cfg=cfg), t):.3f}"
                 for n, t in real.items()]
        print(f"{method}: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
