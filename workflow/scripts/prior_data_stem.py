"""Stack the training and validation crystals' potentials, encoded to [0, 1], for the 4D-STEM prior."""

import numpy as np

from physdiff.data.prior_data import encode_potentials, load_potentials, stem_transform
from physdiff.io import save_json, save_npy
from physdiff.workflow import log, run_step


def main(smk):
    train = load_potentials(list(smk.input.train), split="training")
    val = load_potentials(list(smk.input.val), split="validation")
    cfg = smk.params.transform
    transform = stem_transform(train, val, cfg["gamma"], target_mean=cfg["target_mean"])
    volumes, val_volumes = encode_potentials(train, transform), encode_potentials(val, transform)
    log.info("%d training and %d validation potentials of shape %s; scale %.4g V·Å, gamma %.3g "
             "(mean encoded value: training %.3f, validation %.3f; at gamma 1: %.3f)",
             len(volumes), len(val_volumes), volumes.shape[1:], transform.scale, transform.gamma,
             volumes.mean(), val_volumes.mean(), float(np.clip(val / transform.scale, 0, 1).mean()))
    save_npy(smk.output.volumes, volumes)
    save_npy(smk.output.val, val_volumes)
    save_json(smk.output.scale, {**transform.to_dict(), "n_samples": len(volumes), "n_val_samples": len(val_volumes)})


run_step(snakemake, main)  # noqa: F821
