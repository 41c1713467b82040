"""Write synthetic FLAIR-like subjects in the BraTS 2020 layout."""

from physdiff.data.flair import write_synthetic_brats
from physdiff.workflow import run_step


def main(smk):
    p = smk.params
    write_synthetic_brats(smk.output[0], n_subjects=p.n_subjects, seed=p.seed, shape=tuple(p.shape))


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
