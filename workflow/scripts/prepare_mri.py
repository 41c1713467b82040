"""Preprocess the MRI volumes to (N, S, H, W) arrays in [0, 1], split train/val/test by subject."""

from physdiff.data.mri_dataset import build_mri_splits
from physdiff.io import save_json, save_npy
from physdiff.workflow import run_step


def main(smk):
    p = smk.params
    splits = build_mri_splits(
        p.source, smk.input[0], n_slices=p.n_slices, size=p.size, margin=p.margin, fractions=p.split, seed=p.seed,
        train_contrasts=p.train_contrasts,
    )
    for name, (_, array) in splits.items():
        save_npy(smk.output[name], array)
    # The training array holds the training subjects once per contrast, in this order.
    save_json(smk.output.subjects, {**{name: ids for name, (ids, _) in splits.items()},
                                    "train_contrasts": list(p.train_contrasts)})


run_step(snakemake, main)  # noqa: F821
