"""The training loop of one diffusion prior: `fit` runs it under `TrainSettings`.

Adam on the L1 eps loss, gradient accumulation, a linear learning-rate warm-up, EMA of the
weights (ema-pytorch), bf16 autocast on CUDA (and on CPUs per `cpu_bf16`). Every random draw
comes from the seeded CPU generator or the forked global RNG, whose states the checkpoint keeps.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from ema_pytorch import EMA
from torch import nn
from tqdm.auto import tqdm

from physdiff.errors import InputError
from physdiff.models.checkpoint import TrainState, resume_training, save_training_checkpoint
from physdiff.models.diffusion import GaussianDiffusion, as_eps_model, to_network
from physdiff.models.train_settings import VAL_TIMESTEPS, TrainSettings, cpu_has_native_bf16, use_bf16
from physdiff.models.unet import build_unet

log = logging.getLogger(__name__)
LOG_EVERY_S = 60.0  # progress lines for log files, where a progress bar does not reach


@dataclass
class TrainResult:
    """What `train_prior` returns; `eps_model` is the model to sample with."""

    model: nn.Module
    ema_model: nn.Module
    config: dict
    data_fingerprint: str
    step: int
    loss_history: list = field(default_factory=list)
    val_history: list = field(default_factory=list)  # (step, mean, per-t errors...) rows
    val_timesteps: tuple = VAL_TIMESTEPS
    seconds: float = 0.0  # this run's training loop
    resumed_from: int = 0
    total_seconds: float = 0.0  # every run's training loop up to `step`, resumed runs included
    data_mean: np.ndarray | None = None  # (S_g, H, W) in [0, 1]: `training_mean` of the slabs
    # A class model's `training_mean` of each class's slabs, then of all: (n_classes + 1, S_g, H, W)
    class_means: np.ndarray | None = None
    classes: tuple = ()  # a class model's class names (mri.train_contrasts)

    @property
    def prediction(self) -> str:
        """What the network predicts: "eps" (the paper's) or "v"."""
        return self.config.get("prediction", "eps")

    @property
    def eps_model(self) -> nn.Module:
        """The EMA network as an eps predictor (`physdiff.models.diffusion.as_eps_model`)."""
        return as_eps_model(self.ema_model, self.prediction)


def data_fingerprint(array: np.ndarray) -> str:
    """Short sha256 (16 hex digits) of an array's shape, dtype and bytes."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.shape}|{array.dtype.str}|".encode())
    h.update(array.tobytes())
    return h.hexdigest()[:16]


def training_mean(data: np.ndarray, *, flips: bool = True, rolls: bool = False) -> np.ndarray:
    """Mean slab (S_g, H, W) of the training slabs (N, S_g, H, W) in [0, 1], float32; with
    `flips` also of their mirror images along W, as `augment_flips` trains on them, and with
    `rolls` of all their lateral circular shifts (`augment_rolls`): one level per slice.

    The reverse loop takes it as x0 where the noise hides all signal (`reverse_diffusion`'s
    `mean_snr`): E[x0 | x_t] is the data mean there, while an eps network's x0 is its error
    divided by sqrt(abar_t) = 5e-5."""
    mean = np.asarray(data, np.float64).mean(axis=0)
    if flips:
        mean = 0.5 * (mean + mean[..., ::-1])
    if rolls:
        mean = np.broadcast_to(mean.mean(axis=(-2, -1), keepdims=True), mean.shape)
    return np.ascontiguousarray(mean, np.float32)


def check_slabs(data: np.ndarray, what: str) -> np.ndarray:
    """`data` as an array, which must be float (N, S_g, H, W), finite and in [0, 1]."""
    data = np.asarray(data)
    if data.ndim != 4 or not np.issubdtype(data.dtype, np.floating):
        raise InputError(f"{what} must be a float array (N, S_g, H, W), got {data.dtype} {data.shape}")
    if not np.isfinite(data).all() or data.min() < -1e-6 or data.max() > 1 + 1e-6:
        raise InputError(f"{what} must be finite and scaled to [0, 1] "
                         f"(range {np.nanmin(data):.3g}..{np.nanmax(data):.3g})")
    return data


def _check_labels(labels, classes: tuple[str, ...], n: int) -> np.ndarray | None:
    """The class index of each of `n` slabs as int64 (N,), or None for a model without classes."""
    if not classes:
        if labels is not None:
            raise InputError("class labels given without class names")
        return None
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (n,) or labels.min() < 0 or labels.max() >= len(classes):
        raise InputError(f"class labels must be ({n},) integers in [0, {len(classes)}) for the classes "
                         f"{list(classes)}, got shape {labels.shape}")
    return labels


@torch.no_grad()
def validation_loss(model: nn.Module, val: np.ndarray | torch.Tensor, *, timesteps=VAL_TIMESTEPS, seed: int = 0,
                    batch_size: int = 8, diffusion: GaussianDiffusion | None = None,
                    prediction: str = "eps") -> list[float]:
    """Mean L1 eps error of `model` on slabs `val` (N, S_g, H, W) in [0, 1], one value per t.

    A v-prediction model (`prediction="v"`) is scored on the eps its v implies, so the values
    compare across parametrisations. The noise is drawn from a generator seeded by `seed`, the
    same for every call, so values at different training steps differ only through the weights.
    """
    diffusion = diffusion or GaussianDiffusion()
    model = as_eps_model(model, prediction, diffusion)
    dev = next(model.parameters()).device
    x_all = to_network(torch.as_tensor(np.asarray(val, np.float32))).unsqueeze(1)  # (N, 1, S_g, H, W)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(timesteps), *x_all.shape), generator=gen)
    was_training = model.training
    model.eval()
    errors = []
    for k, t in enumerate(timesteps):
        total = 0.0
        for i in range(0, len(x_all), batch_size):
            x0, z = x_all[i:i + batch_size].to(dev), noise[k, i:i + batch_size].to(dev)
            tt = torch.full((len(x0),), int(t), device=dev, dtype=torch.long)
            total += (model(diffusion.q_sample(x0, tt, z), tt).float() - z).abs().mean(dim=(1, 2, 3, 4)).sum().item()
        errors.append(total / len(x_all))
    model.train(was_training)
    return errors


def _new_state(settings: TrainSettings, config: dict, dev: torch.device, fmt: torch.memory_format) -> TrainState:
    """A fresh model, EMA, Adam and data generator from the seed; call under a seeded, forked RNG."""
    model = build_unet(config["model"]).to(dev, memory_format=fmt)
    # EMA from the end of the warm-up on: ema-pytorch's default start (step 100) and updates every
    # 10 steps left a CPU-length run's EMA far behind the online weights (noise-like samples).
    ema = EMA(model, beta=settings.ema_decay, update_every=settings.ema_update_every,
              update_after_step=min(settings.warmup_steps, 100), include_online_model=False)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    return TrainState(model=model, ema=ema, optimizer=opt, generator=torch.Generator().manual_seed(settings.seed),
                      device=dev)


def _draw_batch(state: TrainState, settings: TrainSettings, x_all: torch.Tensor, y_all: torch.Tensor | None,
                n_classes: int, fmt: torch.memory_format):
    """One micro-batch: (x0 (B, 1, S_g, H, W) augmented, the network to call on it, its labels bound)."""
    gen, dev, b = state.generator, state.device, settings.batch_size
    idx = torch.randint(0, len(x_all), (b,), generator=gen).to(dev)
    x0 = to_network(settings.augment(x_all[idx], gen)).unsqueeze(1)  # (B, 1, S_g, H, W)
    if settings.augment_flips:
        flip = (torch.rand(b, generator=gen) < 0.5).to(dev)
        x0 = torch.where(flip[:, None, None, None, None], x0.flip(-1), x0)
    if settings.augment_rolls:
        shifts = torch.randint(0, 1 << 30, (b, 2), generator=gen).tolist()
        x0 = torch.stack([torch.roll(x, (dy % x.shape[-2], dx % x.shape[-1]), (-2, -1))
                          for x, (dy, dx) in zip(x0, shifts)])
    x0 = x0.contiguous(memory_format=fmt)
    if not n_classes:
        return x0, state.model
    withheld = (torch.rand(b, generator=gen) < settings.label_dropout).to(dev)
    return x0, functools.partial(state.model, y=torch.where(withheld, n_classes, y_all[idx]))


def _optimiser_step(state: TrainState, settings: TrainSettings, diffusion: GaussianDiffusion, autocast,
                    draw_batch) -> None:
    """One optimiser step over `grad_accum` micro-batches from `draw_batch`, then the EMA update."""
    for group in state.optimizer.param_groups:
        group["lr"] = settings.lr_at(state.step)
    total = 0.0
    for _ in range(settings.grad_accum):
        x0, net = draw_batch()
        with autocast:
            loss = diffusion.loss(net, x0, generator=state.generator, min_snr_gamma=settings.min_snr_gamma,
                                  prediction=settings.prediction) / settings.grad_accum
        loss.backward()
        total += loss.item()
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.ema.update()
    state.step += 1
    state.loss_history.append((state.step, total))


def _validate(state: TrainState, settings: TrainSettings, val: np.ndarray | None) -> None:
    """Record the EMA model's `validation_loss` at this step, once per step, where there are validation slabs."""
    if val is None or (state.val_history and state.val_history[-1][0] == state.step):
        return
    errors = validation_loss(state.ema.ema_model, val, timesteps=settings.val_timesteps, seed=settings.seed,
                             prediction=settings.prediction)
    state.val_history.append((state.step, float(np.mean(errors)), *errors))
    log.info("step %d  validation eps L1 (EMA) %.4f  [%s]", state.step, np.mean(errors),
             ", ".join(f"t={t}: {e:.4f}" for t, e in zip(settings.val_timesteps, errors)))


def fit(data: np.ndarray, settings: TrainSettings, *, model_cfg: dict, val_data: np.ndarray | None = None,
        classes: Sequence[str] = (), labels: np.ndarray | None = None,
        checkpoint_path: str | os.PathLike | None = None, device: str | None = None,
        progress: bool = True) -> TrainResult:
    """Train a prior on slabs `data` (N, S_g, H, W) in [0, 1] under `settings`; `train_prior` tells the rest."""
    data = check_slabs(data, "training data")
    classes = tuple(str(c) for c in classes)
    labels = _check_labels(labels, classes, len(data))
    val = None if val_data is None else check_slabs(val_data, "validation data")[:max(settings.val_max_slabs, 1)]
    if val is not None and val.shape[1:] != data.shape[1:]:
        raise InputError(f"validation slabs {val.shape[1:]} differ in shape from the training slabs {data.shape[1:]}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = use_bf16(dev, settings.cpu_bf16)
    if dev.type == "cpu" and settings.cpu_bf16 is True and not cpu_has_native_bf16():
        log.warning("prior.train.cpu_bf16 is true but this CPU has no native bf16 (AVX512-BF16 or AMX): "
                    "training will be many times slower than in float32; set it to 'auto'")
    config = settings.record(model_cfg, classes)
    fingerprint = data_fingerprint(data.astype(np.float32))
    if classes:
        fingerprint += "-" + hashlib.sha256(labels.tobytes()).hexdigest()[:16]
    diffusion = GaussianDiffusion(timesteps=config["timesteps"])
    fmt = torch.channels_last_3d if settings.channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        state = _new_state(settings, config, dev, fmt)
        if checkpoint_path is not None and Path(checkpoint_path).exists():
            resume_training(checkpoint_path, state, config=config, fingerprint=fingerprint)
        x_all = torch.from_numpy(data.astype(np.float32)).to(dev)
        y_all = torch.from_numpy(labels).to(dev) if classes else None
        draw_batch = functools.partial(_draw_batch, state, settings, x_all, y_all, len(classes), fmt)
        log.info("training on %s in %s", dev, "bf16 autocast" if bf16 else "float32")
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        state.model.train()
        steps, every = settings.steps, max(settings.log_every, 1)
        start = last_save = last_log = time.monotonic()
        bar = tqdm(total=steps, initial=min(state.step, steps), desc="train prior", disable=not progress)
        while state.step < steps:
            _optimiser_step(state, settings, diffusion, autocast, draw_batch)
            step = state.step
            bar.update(1)
            recent = [h[1] for h in state.loss_history[-every:]]
            if step % every == 0 or step == steps:
                bar.set_postfix(loss=f"{np.mean(recent):.4f}")
            if time.monotonic() - last_log >= LOG_EVERY_S or step == steps:
                rate = (step - state.resumed_from) / max(time.monotonic() - start, 1e-9)
                log.info("step %d/%d  loss %.4f  %.2f steps/s", step, steps, np.mean(recent), rate)
                last_log = time.monotonic()
            if step % max(settings.val_every, 1) == 0 or step == steps:
                _validate(state, settings, val)
            if checkpoint_path is not None and time.monotonic() - last_save >= settings.checkpoint_every_s:
                save_training_checkpoint(checkpoint_path, state, config=config, fingerprint=fingerprint,
                                         elapsed=time.monotonic() - start)
                last_save = time.monotonic()
        bar.close()
        _validate(state, settings, val)  # a run resumed at its final step still reports the end point
        elapsed = time.monotonic() - start
        if checkpoint_path is not None:
            save_training_checkpoint(checkpoint_path, state, config=config, fingerprint=fingerprint, elapsed=elapsed)
    state.ema.ema_model.eval()
    flips, rolls = settings.augment_flips, settings.augment_rolls
    data_mean = training_mean(data, flips=flips, rolls=rolls)
    class_means = None if not classes else np.stack(
        [training_mean(data[labels == c], flips=flips, rolls=rolls) for c in range(len(classes))]
        + [data_mean])  # the last row, "any class", is the mean of every slab
    return TrainResult(model=state.model, ema_model=state.ema.ema_model, config=config, data_fingerprint=fingerprint,
                       step=state.step, loss_history=state.loss_history, val_history=state.val_history,
                       val_timesteps=settings.val_timesteps, seconds=elapsed, resumed_from=state.resumed_from,
                       total_seconds=state.seconds_before + elapsed, data_mean=data_mean,
                       classes=classes, class_means=class_means)
