"""Grow out-of-distribution root systems with CPlantBox and write them as NIfTI volumes."""

from physdiff.data.roots import write_root_volumes
from physdiff.workflow import run_step


def main(smk):
    p = smk.params
    write_root_volumes(
        smk.output[0], n=p.n_volumes, seed=p.seed, parameter_set=p.parameter_set,
        shape=tuple(p.shape), noise_sigma=p.noise_sigma,
    )


run_step(snakemake, main)  # noqa: F821
