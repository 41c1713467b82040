"""Stack the training crystals' potentials, scaled to [0, 1], for the 4D-STEM prior."""

from physdiff.data.prior_data import stem_prior_volumes
from physdiff.io import save_json, save_npy
from physdiff.workflow import log, run_step


def main(smk):
    volumes, scale = stem_prior_volumes(list(smk.input))
    log.info("%d training potentials of shape %s, scale %.4g V·Å", len(volumes), volumes.shape[1:], scale)
    save_npy(smk.output.volumes, volumes)
    save_json(smk.output.scale, {"scale_V_A": scale, "n_samples": len(volumes)})


run_step(snakemake, main)  # noqa: F821
