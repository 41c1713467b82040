"""Train one partition's diffusion prior, with atomic checkpoints and exact resume.

Adam on the L1 eps loss (docs/method.md, "The prior"), gradient accumulation, a linear learning-rate warm-up,
EMA of the weights (ema-pytorch), bf16 autocast on CUDA only. A checkpoint holds everything
the loop needs (model, EMA, optimiser, step, RNG states, loss history), so a run resumed
from it continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
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

from physdiff.errors import ConfigError, InputError
from physdiff.io import atomic_path
from physdiff.models.augment import IntensityAugment
from physdiff.models.diffusion import GaussianDiffusion, as_eps_model, to_network
from physdiff.models.sampling import partition_bounds
from physdiff.models.unet import DEFAULT_CONFIG, build_unet

log = logging.getLogger(__name__)
LOG_EVERY_S = 60.0  # progress lines for log files, where a progress bar does not reach
VAL_TIMESTEPS = (50, 200, 500, 800)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as torch reports it.

    Without it, oneDNN emulates bf16 and an autocast training step of the default model took
    34 s instead of 1.5 s in float32 (an AVX2-only AMD EPYC, 2026-11-26).
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(torch.cpu, name)()) for name in probes if hasattr(torch.cpu, name))
    except RuntimeError:  # a build without the CPU feature queries
        return False


def use_bf16(device, cpu_bf16) -> bool:
    """Whether training on `device` runs under bf16 autocast: always on CUDA; on the CPU per
    `prior.train.cpu_bf16`: True, False, or "auto" (only where the CPU has native bf16)."""
    if cpu_bf16 not in (True, False, "auto"):
        raise ConfigError(f"prior.train.cpu_bf16 must be true, false or 'auto', got {cpu_bf16!r}")
    if torch.device(device).type == "cuda":
        return True
    return cpu_has_native_bf16() if cpu_bf16 == "auto" else bool(cpu_bf16)


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


def _plain(obj):
    """Config as JSON types (tuples become lists) so saved and fresh configs compare equal."""
    return json.loads(json.dumps(obj))


def load_checkpoint(path: str | os.PathLike, *, map_location="cpu") -> dict:
    """torch.load with weights_only=True; unreadable or pickled-object files are an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(f"{path}: untrusted or corrupt checkpoint (weights_only load refused it: "
                         f"{str(err).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise InputError(f"{path}: untrusted or corrupt checkpoint ({str(err).splitlines()[0]})") from None


def _load_weights(module: nn.Module, state: dict, path: Path, key: str) -> None:
    """load_state_dict, with a missing, extra or mis-shaped key reported as an InputError."""
    if not isinstance(state, dict):
        raise InputError(f"{path}: entry '{key}' is not a state dict")
    own = module.state_dict()
    for name, value in own.items():
        if name not in state:
            raise InputError(f"{path}: '{key}' lacks parameter '{name}'; the checkpoint does not fit its config")
        if tuple(state[name].shape) != tuple(value.shape):
            raise InputError(f"{path}: '{key}.{name}' has shape {tuple(state[name].shape)}, the config "
                             f"expects {tuple(value.shape)}; the checkpoint does not fit its config")
    extra = sorted(set(state) - set(own))
    if extra:
        raise InputError(f"{path}: '{key}' has parameters the config does not build, e.g. '{extra[0]}'")
    module.load_state_dict(state)


def _check_slabs(data: np.ndarray, what: str) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim != 4 or not np.issubdtype(data.dtype, np.floating):
        raise InputError(f"{what} must be a float array (N, S_g, H, W), got {data.dtype} {data.shape}")
    if not np.isfinite(data).all() or data.min() < -1e-6 or data.max() > 1 + 1e-6:
        raise InputError(f"{what} must be finite and scaled to [0, 1] "
                         f"(range {np.nanmin(data):.3g}..{np.nanmax(data):.3g})")
    return data


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


def train_prior(data: np.ndarray, *, model_cfg: dict, steps: int, batch_size: int = 4, lr: float = 1e-4,
                grad_accum: int = 2, ema_decay: float = 0.995, ema_update_every: int = 1,
                warmup_steps: int = 100, augment_flips: bool = True, augment_rolls: bool = False,
                channels_last: bool = False,
                cpu_bf16: bool | str = False,
                checkpoint_path: str | os.PathLike | None = None, checkpoint_every_s: float = 300.0,
                seed: int = 0, device: str | None = None, progress: bool = True, log_every: int = 10,
                val_data: np.ndarray | None = None, val_every: int = 200, val_timesteps=VAL_TIMESTEPS,
                val_max_slabs: int = 16, augment: dict | None = None,
                min_snr_gamma: float | None = None, prediction: str = "eps",
                labels: np.ndarray | None = None, classes: Sequence[str] = (),
                label_dropout: float = 0.2) -> TrainResult:
    """Train an eps- (or v-) prediction prior on slabs `data` (N, S_g, H, W), float32 in [0, 1].

    One step = `grad_accum` micro-batches of `batch_size`, then Adam with lr * min(1, step /
    warmup_steps). `augment_flips` mirrors slabs along W at random; `augment_rolls` shifts each slab
    circularly by a random offset in H and W, which only periodic data (a supercell's potential)
    allow; `cpu_bf16` runs the forward
    under bf16 autocast on the CPU too (on CUDA it always does); "auto" does so only where the
    CPU has native bf16 (`use_bf16`). If `checkpoint_path`
    exists the run resumes from it (same config and data required, else ConfigError); it is
    rewritten atomically every `checkpoint_every_s` seconds and at the end. With `val_data`
    (N_val, S_g, H, W) in [0, 1], `validation_loss` of the EMA model on its first
    `val_max_slabs` slabs is recorded every `val_every` steps and at the end. `augment` holds the
    `physdiff.models.augment.IntensityAugment` settings (contrast, bias field, noise, blur) of the
    training slabs; the validation slabs are never augmented. `min_snr_gamma` weights the loss
    per timestep (`GaussianDiffusion.loss`); None keeps the paper's uniform weights.
    `prediction` is "eps" (the paper's) or "v" (`GaussianDiffusion.loss`); the result's
    `eps_model` and `load_model` turn a v model into an eps predictor for sampling.

    `classes` (names, e.g. the contrasts of mri.train_contrasts) with `labels` (N,), slab i's
    class index, train a class-conditional model (`model.n_classes`); each training slab's label
    is withheld (the "any class" label) with probability `label_dropout`, so the one model also
    learns the prior of all classes together. The validation slabs are scored as class 0.
    """
    data = _check_slabs(data, "training data")
    classes = tuple(str(c) for c in classes)
    if classes:
        labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
        if labels.shape != (len(data),) or labels.min() < 0 or labels.max() >= len(classes):
            raise InputError(f"class labels must be ({len(data)},) integers in [0, {len(classes)}) for the classes "
                             f"{list(classes)}, got shape {labels.shape}")
        if not 0.0 <= label_dropout < 1.0:
            raise ConfigError(f"prior.train.label_dropout must be in [0, 1), got {label_dropout}")
        model_cfg = {**model_cfg, "n_classes": len(classes)}
    elif labels is not None:
        raise InputError("class labels given without class names")
    val = None if val_data is None else _check_slabs(val_data, "validation data")[:max(val_max_slabs, 1)]
    if val is not None and val.shape[1:] != data.shape[1:]:
        raise InputError(f"validation slabs {val.shape[1:]} differ in shape from the training slabs {data.shape[1:]}")
    GaussianDiffusion.check_min_snr_gamma(min_snr_gamma)
    GaussianDiffusion.check_prediction(prediction)
    if steps < 0 or batch_size < 1 or grad_accum < 1:
        raise ConfigError(f"steps ({steps}) >= 0, batch_size ({batch_size}) >= 1, grad_accum ({grad_accum}) >= 1 required")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = use_bf16(dev, cpu_bf16)
    if dev.type == "cpu" and cpu_bf16 is True and not cpu_has_native_bf16():
        log.warning("prior.train.cpu_bf16 is true but this CPU has no native bf16 (AVX512-BF16 or AMX): "
                    "training will be many times slower than in float32; set it to 'auto'")
    try:
        aug = IntensityAugment(**(augment or {}))
    except TypeError as err:
        raise ConfigError(f"prior.augment: {err}") from err
    config = _plain({"model": {**DEFAULT_CONFIG, **model_cfg}, "batch_size": batch_size, "lr": lr,
                     "grad_accum": grad_accum, "ema_decay": ema_decay, "ema_update_every": ema_update_every,
                     "warmup_steps": warmup_steps, "augment_flips": augment_flips, "seed": seed, "timesteps": 1000,
                     "cpu_bf16": cpu_bf16, **({"augment": aug.as_dict()} if aug.active else {}),
                     **({"augment_rolls": True} if augment_rolls else {}),
                     **({"min_snr_gamma": float(min_snr_gamma)} if min_snr_gamma is not None else {}),
                     **({"prediction": prediction} if prediction != "eps" else {}),
                     **({"classes": list(classes), "label_dropout": label_dropout} if classes else {})})
    fingerprint = data_fingerprint(data.astype(np.float32))
    if classes:
        fingerprint += "-" + hashlib.sha256(labels.tobytes()).hexdigest()[:16]
    diffusion = GaussianDiffusion(timesteps=config["timesteps"])
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_unet(config["model"]).to(dev, memory_format=fmt)
        # EMA from the end of the warm-up on: ema-pytorch's default start (step 100) and updates every
        # 10 steps left a CPU-length run's EMA far behind the online weights (noise-like samples).
        ema = EMA(model, beta=ema_decay, update_every=ema_update_every, update_after_step=min(warmup_steps, 100),
                  include_online_model=False)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        step, history, val_history, resumed_from, seconds_before = 0, [], [], 0, 0.0
        if checkpoint_path is not None and Path(checkpoint_path).exists():
            # on the CPU: the RNG states must stay CPU ByteTensors; weights and Adam state are copied to dev
            ckpt = load_checkpoint(checkpoint_path, map_location="cpu")
            if _plain(ckpt.get("config")) != config:
                raise ConfigError(f"checkpoint {checkpoint_path} was written with another config "
                                  f"({ckpt.get('config')}) than this run ({config}); delete it to start afresh")
            if ckpt.get("data_fingerprint") != fingerprint:
                raise ConfigError(f"checkpoint {checkpoint_path} was trained on other data (fingerprint "
                                  f"{ckpt.get('data_fingerprint')} != {fingerprint}); delete it to start afresh")
            _load_weights(model, ckpt["model"], Path(checkpoint_path), "model")
            ema.load_state_dict(ckpt["ema"])
            opt.load_state_dict(ckpt["optimizer"])
            gen.set_state(ckpt["rng"]["data"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            if dev.type == "cuda" and "cuda" in ckpt["rng"]:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"], dev)
            step, history = int(ckpt["step"]), [tuple(h) for h in ckpt["loss_history"]]
            val_history = [tuple(h) for h in ckpt.get("val_history", [])]
            resumed_from, seconds_before = step, float(ckpt.get("train_seconds", 0.0))

        def save_checkpoint(elapsed: float) -> None:
            rng = {"data": gen.get_state(), "torch": torch.get_rng_state()}
            if dev.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(dev)
            state = {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                     "step": step, "config": config, "data_fingerprint": fingerprint, "rng": rng,
                     "loss_history": history, "val_history": val_history,
                     "train_seconds": seconds_before + elapsed}
            with atomic_path(checkpoint_path) as tmp:
                torch.save(state, tmp)

        x_all = torch.from_numpy(data.astype(np.float32)).to(dev)
        y_all = torch.from_numpy(labels).to(dev) if classes else None
        log.info("training on %s in %s", dev, "bf16 autocast" if bf16 else "float32")
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        model.train()
        start = last_save = last_log = time.monotonic()
        bar = tqdm(total=steps, initial=min(step, steps), desc="train prior", disable=not progress)

        def validate() -> None:
            if val is None or (val_history and val_history[-1][0] == step):
                return
            errors = validation_loss(ema.ema_model, val, timesteps=val_timesteps, seed=seed, prediction=prediction)
            val_history.append((step, float(np.mean(errors)), *errors))
            log.info("step %d  validation eps L1 (EMA) %.4f  [%s]", step, np.mean(errors),
                     ", ".join(f"t={t}: {e:.4f}" for t, e in zip(val_timesteps, errors)))

        while step < steps:
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / max(warmup_steps, 1))
            total = 0.0
            for _ in range(grad_accum):
                idx = torch.randint(0, len(x_all), (batch_size,), generator=gen).to(dev)
                x0 = to_network(aug(x_all[idx], gen)).unsqueeze(1)  # (B, 1, S_g, H, W)
                if augment_flips:
                    flip = (torch.rand(batch_size, generator=gen) < 0.5).to(dev)
                    x0 = torch.where(flip[:, None, None, None, None], x0.flip(-1), x0)
                if augment_rolls:
                    shifts = torch.randint(0, 1 << 30, (batch_size, 2), generator=gen).tolist()
                    x0 = torch.stack([torch.roll(x, (dy % x.shape[-2], dx % x.shape[-1]), (-2, -1))
                                      for x, (dy, dx) in zip(x0, shifts)])
                x0 = x0.contiguous(memory_format=fmt)
                net = model
                if classes:
                    withheld = (torch.rand(batch_size, generator=gen) < label_dropout).to(dev)
                    y = torch.where(withheld, len(classes), y_all[idx])
                    net = functools.partial(model, y=y)
                with autocast:
                    loss = diffusion.loss(net, x0, generator=gen, min_snr_gamma=min_snr_gamma,
                                          prediction=prediction) / grad_accum
                loss.backward()
                total += loss.item()
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update()
            step += 1
            history.append((step, total))
            bar.update(1)
            if step % max(log_every, 1) == 0 or step == steps:
                recent = [h[1] for h in history[-max(log_every, 1):]]
                bar.set_postfix(loss=f"{np.mean(recent):.4f}")
            if time.monotonic() - last_log >= LOG_EVERY_S or step == steps:
                recent = [h[1] for h in history[-max(log_every, 1):]]
                rate = (step - resumed_from) / max(time.monotonic() - start, 1e-9)
                log.info("step %d/%d  loss %.4f  %.2f steps/s", step, steps, np.mean(recent), rate)
                last_log = time.monotonic()
            if step % max(val_every, 1) == 0 or step == steps:
                validate()
            if checkpoint_path is not None and time.monotonic() - last_save >= checkpoint_every_s:
                save_checkpoint(time.monotonic() - start)
                last_save = time.monotonic()
        bar.close()
        validate()  # a run resumed at its final step still reports the end point
        elapsed = time.monotonic() - start
        if checkpoint_path is not None:
            save_checkpoint(elapsed)
    ema.ema_model.eval()
    data_mean = training_mean(data, flips=augment_flips, rolls=augment_rolls)
    class_means = None if not classes else np.stack(
        [training_mean(data[labels == c], flips=augment_flips, rolls=augment_rolls) for c in range(len(classes))]
        + [data_mean])  # the last row, "any class", is the mean of every slab
    return TrainResult(model=model, ema_model=ema.ema_model, config=config, data_fingerprint=fingerprint,
                       step=step, loss_history=history, val_history=val_history,
                       val_timesteps=tuple(val_timesteps), seconds=elapsed, resumed_from=resumed_from,
                       total_seconds=seconds_before + elapsed, data_mean=data_mean,
                       classes=classes, class_means=class_means)


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
    contrast-conditional model. `kwargs` go to `train_prior` (device, progress)."""
    if val.shape[1:] != volumes.shape[1:]:
        raise InputError(f"validation volumes {val.shape[1:]} differ from the training volumes {volumes.shape[1:]}")
    lo, hi = partition_bounds(volumes.shape[1], G)[g]
    tr = train_cfg
    return train_prior(
        volumes[:, lo:hi], model_cfg={**model_cfg, "image_size": int(volumes.shape[-2])},
        steps=tr["steps"] if steps is None else steps, batch_size=tr["batch_size"], channels_last=tr["channels_last"],
        cpu_bf16=tr["cpu_bf16"], val_data=val[:, lo:hi], val_every=tr["val_every"], lr=tr["lr"],
        grad_accum=tr["grad_accum"], ema_decay=tr["ema_decay"], ema_update_every=tr["ema_update_every"],
        warmup_steps=tr["warmup_steps"], augment=dict(augment), augment_flips=tr["augment_flips"],
        augment_rolls=model_cfg.get("padding") == "circular", checkpoint_path=checkpoint_path, checkpoint_every_s=tr["checkpoint_every_s"], seed=seed + 1000 * G + g,
        min_snr_gamma=tr.get("min_snr_gamma"), prediction=tr.get("prediction", "eps"),
        **_class_args(len(volumes), contrasts, tr), **kwargs)


def _class_args(n: int, contrasts: Sequence[str], train_cfg: dict) -> dict:
    """train_prior's class arguments for a training array of `contrasts` blocks of subjects, in
    that order (`build_mri_splits`); none for one contrast."""
    if len(contrasts) < 2:
        return {}
    if n % len(contrasts):
        raise InputError(f"{n} training volumes do not split into {len(contrasts)} equal blocks of the contrasts "
                         f"{list(contrasts)} (mri.train_contrasts); rerun prepare_mri")
    return {"classes": tuple(contrasts), "labels": np.repeat(np.arange(len(contrasts)), n // len(contrasts)),
            "label_dropout": train_cfg["label_dropout"]}


def save_model(path: str | os.PathLike, result: TrainResult) -> None:
    """Write the final model.pt {model, ema, config, data_fingerprint, step, train_seconds,
    data_mean} atomically.

    `train_seconds` is the training loop's wall time over every run that reached `step`, so a
    job resumed from a checkpoint still reports what the whole training cost.
    """
    state = {"model": result.model.state_dict(), "ema": result.ema_model.state_dict(), "config": result.config,
             "data_fingerprint": result.data_fingerprint, "step": result.step,
             "train_seconds": float(result.total_seconds),
             **({"data_mean": torch.from_numpy(result.data_mean)} if result.data_mean is not None else {}),
             **({"class_means": torch.from_numpy(result.class_means)} if result.class_means is not None else {})}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


ANY_CLASS = "any"


def model_classes(model: nn.Module) -> tuple[str, ...]:
    """The class names of a class-conditional model from `load_model` (() for a plain one)."""
    return tuple(getattr(getattr(model, "net", model), "classes", ()))


def set_model_class(model: nn.Module, name: str) -> None:
    """Make a class-conditional model from `load_model` draw class `name` ("any": every class
    together, the label withheld), and its `data_mean` that class's training mean."""
    net = getattr(model, "net", model)  # EpsFromV wraps a v model
    classes = tuple(getattr(net, "classes", ()))
    if not classes:
        raise ConfigError(f"class '{name}' asked of a model trained without classes")
    if name != ANY_CLASS and name not in classes:
        raise ConfigError(f"class '{name}' is not one of the model's {list(classes)} or '{ANY_CLASS}'")
    net.label = len(classes) if name == ANY_CLASS else classes.index(name)
    model.data_mean = net.class_means[net.label]


def load_model(path: str | os.PathLike, *, map_location="cpu", contrast: str | None = None) -> tuple[nn.Module, dict]:
    """Load model.pt safely; returns (U-Net holding the EMA weights as an eps predictor, in eval
    mode; meta dict). A v-prediction U-Net comes wrapped in `EpsFromV`.

    The model carries its training slabs' mean as `model.data_mean` ((S_g, H, W) float32 tensor
    in [0, 1]; None in files written before it was stored), which `reverse_diffusion` uses.
    A class-conditional model (trained on several mri.train_contrasts) draws `contrast` (one of
    its classes, or "any"; default its first, FLAIR) and its data_mean is that class's."""
    state = load_checkpoint(path, map_location=map_location)
    missing = [k for k in ("ema", "config") if k not in state]
    if missing or not isinstance(state.get("config"), dict) or "model" not in state["config"]:
        raise InputError(f"{path}: not a physdiff model file (needs 'ema' and 'config' with a 'model' entry)")
    try:
        # Files written before the `upsample` key existed were trained with interpolate-first.
        model = build_unet({"upsample": "interpolate_first", **state["config"]["model"]})
    except (ConfigError, TypeError) as err:
        raise InputError(f"{path}: its model config cannot be built ({err})") from None
    _load_weights(model, state["ema"], Path(path), "ema")
    try:
        model = as_eps_model(model, state["config"].get("prediction", "eps"))
    except ConfigError as err:
        raise InputError(f"{path}: {err}") from None
    mean = state.get("data_mean")
    size = state["config"]["model"].get("image_size")
    if mean is not None and (not isinstance(mean, torch.Tensor) or mean.ndim != 3
                             or (size is not None and tuple(mean.shape[1:]) != (size, size))
                             or not torch.isfinite(mean).all()):
        raise InputError(f"{path}: 'data_mean' must be a finite (S_g, H, W) tensor for "
                         f"{size} x {size} slices, got {getattr(mean, 'shape', type(mean).__name__)}")
    model.data_mean = None if mean is None else mean.float().cpu()
    classes = tuple(state["config"].get("classes", ()))
    if classes:
        means = state.get("class_means")
        if (not isinstance(means, torch.Tensor) or model.data_mean is None
                or tuple(means.shape) != (len(classes) + 1, *model.data_mean.shape) or not torch.isfinite(means).all()):
            raise InputError(f"{path}: a model of classes {list(classes)} needs finite 'class_means' of shape "
                             f"({len(classes) + 1}, S_g, H, W), got {getattr(means, 'shape', type(means).__name__)}")
        net = getattr(model, "net", model)
        net.classes, net.class_means = classes, means.float().cpu()
        set_model_class(model, contrast or classes[0])
    elif contrast is not None:
        raise InputError(f"{path}: contrast '{contrast}' asked of a model trained without contrast classes "
                         "(mri.train_contrasts [flair])")
    meta = {k: state.get(k) for k in ("config", "data_fingerprint", "step", "train_seconds")}
    return model.to(map_location).eval(), meta
