"""`physdiff info`: what a run's results folder holds."""

from __future__ import annotations

import argparse

from physdiff.cli.common import Formatter, read_json
from physdiff.errors import InputError
from physdiff.results import MODALITIES, Layout

DESCRIPTION = """\
Say what a run's results folder holds, reading only what is there:

  trained models   per modality and G: each partition model's training steps, slab (slices x
                   size), training time and, for contrast-conditional MRI models, its contrasts
                   (checkpoints are read with torch.load(weights_only=True): an untrusted or
                   corrupt file stops the command and is named);
  tuned settings   per modality, mask and method: the values tune_dart, tune_drift and the
                   baseline tunings chose, with their validation score;
  tables           which of tables/ exist, and the first lines of Table 1;
  figures          the PNGs under figures/.
"""

EPILOG = """\
example:
  physdiff info results
"""

TABLE1_LINES = 8


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="what a run's results folder holds", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=Formatter)
    p.add_argument("results", nargs="?", default="results", help="a run's results folder (default: results)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    lay = Layout(args.results)
    if not lay.root.is_dir():
        raise InputError(f"{lay.root}: no such folder (expected a run's results folder, as `snakemake` writes it)")
    print(f"results folder {lay.root}")
    print("trained models:")
    print("\n".join(model_lines(lay)) or "  none")
    print("tuned settings:")
    print("\n".join(tuning_lines(lay)) or "  none")
    tables = lay.tables()
    print("tables: " + (", ".join(p.name for p in tables) if tables else "none"))
    table1 = lay.table("table1")
    if table1.is_file():
        lines = table1.read_text().splitlines()
        print(f"Table 1 ({table1}, first {min(TABLE1_LINES, len(lines))} of {len(lines)} lines):")
        print("\n".join("  " + line for line in lines[:TABLE1_LINES]))
    figures = lay.figures()
    print("figures: " + (", ".join(p.name for p in figures) if figures else "none"))


def model_lines(lay: Layout) -> list[str]:
    """One line per partition model of every modality and G the run trained."""
    from physdiff.models.train import load_checkpoint

    lines = []
    for modality in MODALITIES:
        for G in lay.trained_partitions(modality):
            for g, path in enumerate(lay.prior_models(modality, G)):
                if not path.is_file():
                    lines.append(f"  {modality} G={G} g{g}: missing ({path})")
                    continue
                state = load_checkpoint(path)
                config = state.get("config") if isinstance(state, dict) else None
                if not isinstance(config, dict) or "model" not in config:
                    raise InputError(f"{path}: not a physdiff model file (needs a 'config' with a 'model' entry)")
                mean, size = state.get("data_mean"), config["model"].get("image_size")
                slab = f"{mean.shape[0]} x {size} x {size}" if mean is not None else f"? x {size} x {size}"
                seconds = state.get("train_seconds")
                classes = config.get("classes") or []
                lines.append(f"  {modality} G={G} g{g}: {state.get('step', '?')} steps, slabs {slab}"
                             + (f", {seconds / 60:.1f} min training" if seconds else "")
                             + (f", contrasts {', '.join(classes)}" if classes else "") + f"  ({path})")
    return lines


def tuning_lines(lay: Layout) -> list[str]:
    """One line per tuning file: its mask, method and chosen values."""
    lines = []
    for modality in MODALITIES:
        for mask, method, path in lay.tuning_files(modality):
            lines.append(f"  {modality} {mask or '-'} {method}: {describe(read_json(path))}")
    return lines


def describe(tuning: dict) -> str:
    """The choice a tuning file records, whichever tuning wrote it."""
    if "settings" in tuning:  # tune_dart
        chosen = ", ".join(f"{k} {v}" for k, v in tuning["settings"].items())
    elif "refine_top" in tuning or ("n_iter" in tuning and "value" not in tuning):  # tune_drift
        chosen = f"K = {tuning['n_iter']}, M = {tuning.get('refine_top', 1)}"
    elif "value" in tuning:  # a baseline's weight (and 4D-STEM iterations)
        chosen = f"{tuning.get('param', 'value')} = {tuning['value']:g}" + (
            f", {tuning['n_iter']} iterations" if "n_iter" in tuning else "")
    else:
        chosen = "unrecognised (" + ", ".join(sorted(tuning)) + ")"
    score = tuning.get("score", tuning.get("ssim_mean"))
    if score is None and "value" in tuning:  # an MRI baseline's file: the chosen value's row of its table
        score = next((r.get("ssim_mean") for r in tuning.get("table", []) if r.get("lam") == tuning["value"]), None)
    return chosen + (f"; validation SSIM {score:.4f}" if isinstance(score, (int, float)) else "") + (
        "; on the edge of the values tried" if tuning.get("on_edge") else "")
