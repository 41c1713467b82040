"""Draw a few generated volumes beside real ones."""

import numpy as np

from physdiff.io import atomic_path
from physdiff.plots.generated import plot_generated
from physdiff.workflow import run_step


def main(smk):
    real = np.load(smk.input.real, mmap_mode="r")
    generated = {f"G={G}": np.load(path) for G, path in zip(smk.params.partitions, smk.input.generated)}
    fig = plot_generated(np.asarray(real[:2]), generated, modality=smk.wildcards.modality)
    with atomic_path(smk.output[0], suffix=".png") as tmp:
        fig.savefig(tmp, dpi=smk.params.dpi)


run_step(snakemake, main)  # noqa: F821
