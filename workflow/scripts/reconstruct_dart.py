"""Reconstruct one test volume (MRI) or sample (4D-STEM) with DART, using the settings tuned on validation.

Each volume's reverse loop has its own seed (the config's seed plus the volume's index, as tune_dart
seeds its validation volumes), so the spread over the test set includes the sampler's. The rule's
`adapt` param (method dart_adapt, both modalities) adapts the prior to the scan (`physdiff.recon.adapt`); with
`heldout` (MRI) it also reconstructs from the lines less a held-out fraction, for the self-validated
choice (`physdiff.recon.select`), and writes that reconstruction to the `kept` output.
"""

import json
import zlib

from physdiff.io import save_csv_rows, save_json, save_npy
from physdiff.recon.run_prior import load_partition_models, load_test_problem, run_dart
from physdiff.workflow import log, run_step


def volume_seed(seed: int, sample: str) -> int:
    """The config's seed plus the MRI volume's index, or a stable number from a 4D-STEM sample's name."""
    return seed + (int(sample) if sample.isdigit() else zlib.crc32(sample.encode()) % 100_000)


def main(smk):
    p = smk.params
    files = smk.input
    problem, truth, sigma, ids = load_test_problem(
        p.modality, p.problem, dict(smk.wildcards.items()), volumes=files.get("volumes"), mask=files.get("mask"),
        sample=files.get("sample"), transform=files.get("transform"), solver_tuning=files.solver_tuning)
    settings = json.loads(open(smk.input.tuning).read())["settings"]
    models = load_partition_models(list(smk.input.models), slices=truth.shape[0], size=truth.shape[1:])
    kept = {}
    volume, row, steps = run_dart(models, problem, truth, modality=p.modality, settings=settings,
                                  seed=volume_seed(p.seed, str(smk.wildcards.sample)), sigma=sigma,
                                  adapt=getattr(p, "adapt", None), heldout=getattr(p, "heldout", None), kept_out=kept)
    row = {"modality": p.modality, **ids, **row}
    log.info("%s", row)
    save_npy(smk.output.recon, volume)
    save_json(smk.output.metrics, row)
    save_csv_rows(smk.output.steps, steps)
    if "kept" in smk.output.keys():  # MRI: the reconstruction from the kept lines, for the self-validated choice
        save_npy(smk.output.kept, kept["volume"])


run_step(snakemake, main)  # noqa: F821
