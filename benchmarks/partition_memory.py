"""Memory per device of the trained partition models against G (issue: G = 2 at most 0.6 of G = 1).

    python benchmarks/partition_memory.py [--results results] [--modality mri] [--device cpu|cuda]

For every G in prior.partitions.<modality> whose model files exist under --results, what one
device holds for one partition model (`physdiff.models.memory`, each in a fresh process): its
parameters plus the peak growth over one training step at prior.train.batch_size (the model's
own autocast) and over one sampling forward at prior.generate.batch_size, on its slab; the
largest over the G models, and its ratio to G = 1. The same figures go into Figure 5's CSV
(column model_mb). Unlike a job's peak RSS they leave out the ~400 MB of libraries that every
process loads whatever G is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from physdiff.config import validate_config
from physdiff.recon.sweep import model_memory_per_device
from physdiff.results import Layout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--results", default="results", help="the run's results folder, with its trained priors")
    ap.add_argument("--modality", choices=["mri", "stem"], default="mri")
    ap.add_argument("--device", default=None, help="default: cuda where available, else cpu")
    args = ap.parse_args()
    cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    lay = Layout(args.results)
    slices = cfg["mri"]["n_slices"] if args.modality == "mri" else cfg["stem"]["simulation"]["n_slices"]
    paths = {G: lay.prior_models(args.modality, G) for G in cfg["prior"]["partitions"][args.modality]}
    missing = {G: [str(p) for p in ps if not p.exists()] for G, ps in paths.items()}
    paths = {G: ps for G, ps in paths.items() if not missing[G]}
    for G in sorted(set(missing) - set(paths)):
        print(f"G = {G}: skipped, missing {missing[G]}")
    if not paths:
        raise SystemExit(f"no trained {args.modality} models under {args.results}: run the pipeline first")
    mb = model_memory_per_device(paths, slices=slices, train_batch=cfg["prior"]["train"]["batch_size"],
                                 sample_batch=cfg["prior"]["generate"]["batch_size"], device=args.device)
    print(f"{args.modality}, {slices} slices; MB per device (parameters + peak growth), ratio to G = 1")
    print("| G | training step | ratio | sampling forward | ratio |")
    print("|---|---|---|---|---|")
    ref = mb.get(1)
    for G, row in sorted(mb.items()):
        ratio = (lambda k: f"{row[k] / ref[k]:.2f}" if ref else "-")
        print(f"| {G} | {row['train']:.0f} | {ratio('train')} | {row['sample']:.0f} | {ratio('sample')} |")


if __name__ == "__main__":
    main()
