"""Train the diffusion model of one partition g of G on its slab of the training volumes."""

import hashlib
import json

import numpy as np
import torch

from physdiff.errors import InputError
from physdiff.models.augment import IntensityAugment
from physdiff.models.plots import write_loss_curve
from physdiff.models.sampling import partition_bounds
from physdiff.models.train import save_model, train_partition
from physdiff.workflow import log, run_step


def checkpoint_path(smk) -> str:
    """The checkpoint of this exact setting: a changed model or training config (other than the
    step count, which a resumed run may extend) starts afresh instead of meeting a stale file."""
    setting = {k: v for k, v in smk.params.train.items() if k != "steps"}
    key = json.dumps([smk.params.model, setting, smk.params.seed]
                     + ([smk.params.augment] if IntensityAugment(**smk.params.augment).active else []), sort_keys=True)
    return smk.params.checkpoint.removesuffix(".pt") + f"-{hashlib.sha256(key.encode()).hexdigest()[:10]}.pt"


def main(smk):
    # One intra-op thread per declared Snakemake thread: torch's default (every core) made
    # two training jobs on two cores oversubscribe each other.
    torch.set_num_threads(max(int(smk.threads), 1))
    G, g = int(smk.wildcards.G), int(smk.wildcards.g)
    volumes, val = np.load(smk.input.data), np.load(smk.input.val)
    if val.shape[1:] != volumes.shape[1:]:
        raise InputError(f"{smk.input.val}: validation volumes {val.shape[1:]} differ from the training "
                         f"volumes {volumes.shape[1:]} of {smk.input.data}")
    lo, hi = partition_bounds(volumes.shape[1], G)[g]
    log.info("partition %d of %d: slices [%d, %d) of %d training volumes %s", g, G, lo, hi, len(volumes), volumes.shape[1:])
    result = train_partition(volumes, val, G=G, g=g, model_cfg=smk.params.model, train_cfg=smk.params.train,
                             augment=smk.params.augment, seed=smk.params.seed, checkpoint_path=checkpoint_path(smk),
                             contrasts=smk.params.contrasts)
    if result.resumed_from:
        log.info("resumed from the checkpoint at step %d; %.0f s of training in all runs", result.resumed_from,
                 result.total_seconds)
    last = [loss for _, loss in result.loss_history[-50:]]
    log.info("trained %d steps in %.0f s (%.2f s/step this run); mean loss of the last 50 steps %.4f",
             result.step, result.seconds, result.seconds / max(result.step - result.resumed_from, 1), np.mean(last))
    save_model(smk.output.model, result)
    if result.val_history:
        log.info("validation eps L1 of the EMA model: %s", ", ".join(f"step {int(r[0])}: {r[1]:.4f}" for r in result.val_history))
    write_loss_curve(result.loss_history, smk.output.loss_csv, smk.output.loss_png,
                     title=f"{smk.wildcards.modality} prior, partition {g} of G={G}",
                     val_history=result.val_history, val_timesteps=result.val_timesteps)


run_step(snakemake, main)  # noqa: F821
