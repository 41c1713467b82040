"""Train one partition's diffusion prior: `train_prior` and `train_partition`, the entry points.

The parts live in their own modules: `train_settings` (the checked settings), `train_loop` (the
loop and its result) and `checkpoint` (atomic checkpoints, exact resume, model files). Their
public names are importable from here as well, as callers did before the split.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from physdiff.errors import InputError
from physdiff.models.checkpoint import (ANY_CLASS, load_checkpoint, load_model, model_classes, save_model,
                                        set_model_class)
from physdiff.models.sampling import partition_bounds
from physdiff.models.train_loop import TrainResult, data_fingerprint, fit, training_mean, validation_loss
from physdiff.models.train_settings import VAL_TIMESTEPS, TrainSettings, cpu_has_native_bf16, use_bf16

__all__ = ["ANY_CLASS", "VAL_TIMESTEPS", "TrainResult", "TrainSettings", "cpu_has_native_bf16", "data_fingerprint",
           "load_checkpoint", "load_model", "model_classes", "save_model", "set_model_class", "train_partition",
           "train_prior", "training_mean", "use_bf16", "validation_loss"]


def train_prior(data: np.ndarray, *, model_cfg: dict, val_data: np.ndarray | None = None,
                classes: Sequence[str] = (), labels: np.ndarray | None = None,
                checkpoint_path: str | os.PathLike | None = None, device: str | None = None,
                progress: bool = True, **settings) -> TrainResult:
    """Train an eps- (or v-) prediction prior on slabs `data` (N, S_g, H, W), float32 in [0, 1].

    `settings` are the fields of `TrainSettings` (steps, batch_size, lr, grad_accum, ...; `steps`
    is required), which checks them. `cpu_bf16` runs the forward under bf16 autocast on the CPU
    too (on CUDA it always does); "auto" does so only where the CPU has native bf16 (`use_bf16`).
    If `checkpoint_path` exists the run resumes from it (same config and data required, else
    ConfigError); it is rewritten atomically every `checkpoint_every_s` seconds and at the end.
    With `val_data` (N_val, S_g, H, W) in [0, 1], `validation_loss` of the EMA model on its first
    `val_max_slabs` slabs is recorded every `val_every` steps and at the end; the validation
    slabs are never augmented. The result's `eps_model` and `load_model` turn a v model into an
    eps predictor for sampling.

    `classes` (names, e.g. the contrasts of mri.train_contrasts) with `labels` (N,), slab i's
    class index, train a class-conditional model (`model.n_classes`); each training slab's label
    is withheld (the "any class" label) with probability `label_dropout`, so the one model also
    learns the prior of all classes together. The validation slabs are scored as class 0.
    """
    return fit(data, TrainSettings(**settings), model_cfg=model_cfg, val_data=val_data, classes=classes,
               labels=labels, checkpoint_path=checkpoint_path, device=device, progress=progress)


def train_partition(volumes: np.ndarray, val: np.ndarray, *, G: int, g: int, model_cfg: dict, train_cfg: dict,
                    augment: dict, seed: int, checkpoint_path: str | os.PathLike | None, steps: int | None = None,
                    contrasts: Sequence[str] = (), **kwargs) -> TrainResult:
    """`train_prior` on partition g of G of `volumes` (N, S, H, W) with the config's `prior.model`,
    `prior.train` and `prior.augment.<modality>` sections, as the pipeline's train_prior rule runs
    it: slab g of the training and validation volumes, seed `seed + 1000 G + g`. `steps`
    overrides `train_cfg["steps"]`. A `model_cfg` with circular padding
    (`physdiff.config.prior_model_config` where `prior.periodic.<modality>` is set) marks slices
    that wrap around laterally, as a periodic supercell's potential does; training then also
    shifts slabs at random (`augment_rolls`). `contrasts` (mri.train_contrasts), where more than
    one, name the equal blocks of `volumes` (`build_mri_splits` stacks them so) and train a
    contrast-conditional model. `kwargs` go to `fit` (device, progress)."""
    if val.shape[1:] != volumes.shape[1:]:
        raise InputError(f"validation volumes {val.shape[1:]} differ from the training volumes {volumes.shape[1:]}")
    lo, hi = partition_bounds(volumes.shape[1], G)[g]
    settings = TrainSettings.from_config(train_cfg, steps=steps, seed=seed + 1000 * G + g, augment=augment,
                                         augment_rolls=model_cfg.get("padding") == "circular")
    return fit(volumes[:, lo:hi], settings, model_cfg={**model_cfg, "image_size": int(volumes.shape[-2])},
               val_data=val[:, lo:hi], checkpoint_path=checkpoint_path, **_class_args(len(volumes), contrasts),
               **kwargs)


def _class_args(n: int, contrasts: Sequence[str]) -> dict:
    """fit's class arguments for a training array of `contrasts` blocks of subjects, in that
    order (`build_mri_splits`); none for one contrast."""
    if len(contrasts) < 2:
        return {}
    if n % len(contrasts):
        raise InputError(f"{n} training volumes do not split into {len(contrasts)} equal blocks of the contrasts "
                         f"{list(contrasts)} (mri.train_contrasts); rerun prepare_mri")
    return {"classes": tuple(contrasts), "labels": np.repeat(np.arange(len(contrasts)), n // len(contrasts))}
