"""Per-scan adaptation on 4D-STEM: plain and adapted DART on simulated samples, SSIM and time per sample.

    python benchmarks/studies/adapt_stem.py --results results --samples SAMPLE.npz [SAMPLE.npz ...] \
        [--adapt '{"lr": 1e-3}'] [--dart '{"eta": 1.0}'] [--seed 0] [--threads 1]

(the samples: for example the run's hexagonal out-of-distribution split, `Layout.stem_samples("ood")`)

The partition models, the prior's potential scaling and the sparse-decomposition weight DRIFT's
solver uses are read from a finished run's results folder (through `physdiff.results.Layout`).
DART runs with the config's settings (`--config`), overridden by the run's tuned 4D-STEM DART
settings where that file exists and then by `--dart`; adapted DART adds `recon.dart.adapt`
overridden by `--adapt`. The held-out part is a fraction of the scan positions. Each sample's
ground truth only scores the result (SSIM of the phase projection, as the pipeline's rows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="a finished run's results folder (models, scale)")
    ap.add_argument("--samples", nargs="+", required=True, help="4D-STEM sample files (.npz with the potential)")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--adapt", default="{}", help="JSON overriding recon.dart.adapt")
    ap.add_argument("--dart", default="{}", help="JSON overriding the DART settings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from physdiff.cli.common import dart_settings_of
    from physdiff.config import adapt_settings, stem_problem_config, validate_config
    from physdiff.recon.run_prior import load_partition_models, load_test_problem, run_dart
    from physdiff.results import Layout

    torch.set_num_threads(args.threads)
    cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    lay, rc = Layout(args.results), cfg["recon"]
    settings = {**dart_settings_of(lay, "stem", cfg), **json.loads(args.dart)}
    adapt = {**adapt_settings(cfg), **json.loads(args.adapt)}
    solver = lay.tuning("stem", rc["drift"]["stem_solver"])
    print(f"DART {settings}\nadaptation {adapt}", flush=True)
    G = rc["partitions"]["stem"]
    rows = []
    for path in args.samples:
        split = Path(path).parent.name
        problem, truth, sigma, _ = load_test_problem(
            "stem", stem_problem_config(cfg), {"split": split, "sample": Path(path).stem}, sample=path, transform=str(lay.stem_scale()),
            solver_tuning=str(solver) if solver.is_file() else None)
        models = load_partition_models(lay.prior_models("stem", G), slices=truth.shape[0], size=truth.shape[1:])
        row = {"sample": Path(path).stem}
        for name, ad in (("dart", None), ("dart_adapt", adapt)):
            _, r, _ = run_dart(models, problem, truth, modality="stem", settings=settings, seed=args.seed,
                               sigma=sigma, progress=False, adapt=ad)
            row[name], row[f"{name}_s"] = r["ssim"], r["wall_s"]
            if ad is not None:
                row["stop"] = r["adapt_stop"]
        rows.append(row)
        print(f"{row['sample']:>14}  DART {row['dart']:.4f} ({row['dart_s']:.0f} s)  adapted {row['dart_adapt']:.4f} "
              f"({row['dart_adapt_s']:.0f} s, stop {row['stop']})", flush=True)
    plain, adapted = np.array([r["dart"] for r in rows]), np.array([r["dart_adapt"] for r in rows])
    print(f"mean over {len(rows)}: DART {plain.mean():.4f} ± {plain.std():.4f}, adapted {adapted.mean():.4f} ± "
          f"{adapted.std():.4f}; adapted higher on {(adapted > plain).sum()} of {len(rows)}; time ratio "
          f"{np.sum([r['dart_adapt_s'] for r in rows]) / np.sum([r['dart_s'] for r in rows]):.2f}")


if __name__ == "__main__":
    main()
