"""Training checkpoints and model files: atomic writes, weights_only loads, exact resume.

A training checkpoint holds everything the loop needs (model, EMA, optimiser, step, RNG states,
loss history), so a run resumed from it continues exactly as an uninterrupted one would: the
weights come out bitwise equal. A model file (model.pt) holds the EMA weights to sample with.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from ema_pytorch import EMA
from torch import nn

from physdiff.errors import ConfigError, InputError
from physdiff.io import atomic_path
from physdiff.models.diffusion import as_eps_model
from physdiff.models.train_settings import plain_json
from physdiff.models.unet import build_unet

if TYPE_CHECKING:
    from physdiff.models.train_loop import TrainResult

ANY_CLASS = "any"


@dataclass
class TrainState:
    """What a training run changes as it goes, all of which its checkpoint holds."""

    model: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # CPU generator of the batches, augmentations, t and noise
    device: torch.device
    step: int = 0
    loss_history: list = field(default_factory=list)  # (step, loss) rows
    val_history: list = field(default_factory=list)  # (step, mean, per-t errors...) rows
    resumed_from: int = 0
    seconds_before: float = 0.0  # the training loop's seconds in the runs before this one


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


def load_weights(module: nn.Module, state: dict, path: Path, key: str) -> None:
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


def save_training_checkpoint(path: str | os.PathLike, state: TrainState, *, config: dict, fingerprint: str,
                             elapsed: float) -> None:
    """Write `state` with its `config` and data `fingerprint` to `path` atomically; `elapsed` is
    this run's training-loop time, added to the earlier runs' in `train_seconds`."""
    rng = {"data": state.generator.get_state(), "torch": torch.get_rng_state()}
    if state.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(state.device)
    saved = {"model": state.model.state_dict(), "ema": state.ema.state_dict(),
             "optimizer": state.optimizer.state_dict(), "step": state.step, "config": config,
             "data_fingerprint": fingerprint, "rng": rng,
             "loss_history": state.loss_history, "val_history": state.val_history,
             "train_seconds": state.seconds_before + elapsed}
    with atomic_path(path) as tmp:
        torch.save(saved, tmp)


def resume_training(path: str | os.PathLike, state: TrainState, *, config: dict, fingerprint: str) -> None:
    """Restore `state` (weights, EMA, optimiser, RNG states, histories) from the checkpoint at
    `path`; one written with another config or on other data is a ConfigError."""
    # on the CPU: the RNG states must stay CPU ByteTensors; weights and Adam state are copied to the device
    ckpt = load_checkpoint(path, map_location="cpu")
    if plain_json(ckpt.get("config")) != config:
        raise ConfigError(f"checkpoint {path} was written with another config "
                          f"({ckpt.get('config')}) than this run ({config}); delete it to start afresh")
    if ckpt.get("data_fingerprint") != fingerprint:
        raise ConfigError(f"checkpoint {path} was trained on other data (fingerprint "
                          f"{ckpt.get('data_fingerprint')} != {fingerprint}); delete it to start afresh")
    load_weights(state.model, ckpt["model"], Path(path), "model")
    state.ema.load_state_dict(ckpt["ema"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.generator.set_state(ckpt["rng"]["data"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if state.device.type == "cuda" and "cuda" in ckpt["rng"]:
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"], state.device)
    state.step, state.loss_history = int(ckpt["step"]), [tuple(h) for h in ckpt["loss_history"]]
    state.val_history = [tuple(h) for h in ckpt.get("val_history", [])]
    state.resumed_from, state.seconds_before = state.step, float(ckpt.get("train_seconds", 0.0))


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
    load_weights(model, state["ema"], Path(path), "ema")
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
