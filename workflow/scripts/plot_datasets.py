"""Draw the datasets figure from the prepared MRI arrays and two STEM samples."""

import numpy as np

from physdiff.data.stem_sim import load_sample
from physdiff.io import atomic_path
from physdiff.plots.datasets import plot_datasets
from physdiff.workflow import run_step


def main(smk):
    mri = np.load(smk.input.mri_train, mmap_mode="r")[0]
    ood = np.load(smk.input.mri_ood[0], mmap_mode="r")[0] if smk.input.mri_ood else None
    samples = [load_sample(smk.input.cubic), load_sample(smk.input.hexagonal)]
    fig = plot_datasets(np.asarray(mri), None if ood is None else np.asarray(ood), samples)
    with atomic_path(smk.output[0], suffix=".png") as tmp:
        fig.savefig(tmp, dpi=smk.params.dpi)


run_step(snakemake, main)  # noqa: F821
