"""Write synthetic FLAIR-like subjects (and their mri.train_contrasts) in the BraTS 2020 layout."""

from physdiff.data.flair import write_synthetic_brats
from physdiff.workflow import run_step


def main(smk):
    p = smk.params
    write_synthetic_brats(smk.output[0], n_subjects=p.n_subjects, seed=p.seed, shape=tuple(p.shape),
                          contrasts=tuple(p.contrasts))


run_step(snakemake, main)  # noqa: F821 (injected by Snakemake)
