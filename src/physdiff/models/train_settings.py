"""The settings of one prior's training (`prior.train`, `prior.augment.<modality>`), checked once.

`TrainSettings` holds every knob of the loop; a bad value is a ConfigError that names its key.
`record` turns it into the dict a checkpoint stores, which a resumed run must match.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field, fields

import torch

from physdiff.errors import ConfigError
from physdiff.models.augment import IntensityAugment
from physdiff.models.diffusion import GaussianDiffusion
from physdiff.models.unet import DEFAULT_CONFIG

VAL_TIMESTEPS = (50, 200, 500, 800)
TIMESTEPS = 1000  # the diffusion's T, recorded in every checkpoint
CPU_BF16 = (True, False, "auto")
LR_DECAYS = ("none", "linear", "cosine")


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


def _check_cpu_bf16(cpu_bf16) -> None:
    """`prior.train.cpu_bf16` must be true, false or "auto"."""
    if cpu_bf16 not in CPU_BF16:
        raise ConfigError(f"prior.train.cpu_bf16 must be true, false or 'auto', got {cpu_bf16!r}")


def use_bf16(device, cpu_bf16) -> bool:
    """Whether training on `device` runs under bf16 autocast: always on CUDA; on the CPU per
    `prior.train.cpu_bf16`: True, False, or "auto" (only where the CPU has native bf16)."""
    _check_cpu_bf16(cpu_bf16)
    if torch.device(device).type == "cuda":
        return True
    return cpu_has_native_bf16() if cpu_bf16 == "auto" else bool(cpu_bf16)


def intensity_augment(augment: dict | IntensityAugment | None) -> IntensityAugment:
    """`prior.augment.<modality>` as an IntensityAugment; an unknown key is a ConfigError."""
    if isinstance(augment, IntensityAugment):
        return augment
    try:
        return IntensityAugment(**(augment or {}))
    except TypeError as err:
        raise ConfigError(f"prior.augment: {err}") from err


def plain_json(obj):
    """Config as JSON types (tuples become lists) so saved and fresh configs compare equal."""
    return json.loads(json.dumps(obj))


def _is_number(value) -> bool:
    """Whether `value` is a real number and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainSettings:
    """How one prior trains: the `prior.train` keys, the slab augmentations, the seed and the logging.

    One step = `grad_accum` micro-batches of `batch_size`, then Adam with lr * min(1, step /
    warmup_steps). `augment_flips` mirrors slabs along W at random; `augment_rolls` shifts each
    slab circularly in H and W, which only periodic data (a supercell's potential) allow.
    `augment` holds the `IntensityAugment` settings (a dict is converted). `min_snr_gamma`
    weights the loss per timestep (None: the paper's uniform weights); `prediction` is "eps"
    (the paper's) or "v". `lr_decay` anneals the learning rate after the warm-up ("none": constant).
    `label_dropout` is the probability that a class model's training slab
    has its label withheld. The validation loss is taken every `val_every` steps on the first
    `val_max_slabs` validation slabs at `val_timesteps`; the loss is shown every `log_every`.
    """

    steps: int
    batch_size: int = 4
    lr: float = 1e-4
    grad_accum: int = 2
    warmup_steps: int = 100
    ema_decay: float = 0.995
    ema_update_every: int = 1
    augment_flips: bool = True
    augment_rolls: bool = False
    augment: IntensityAugment = field(default_factory=IntensityAugment)
    min_snr_gamma: float | None = None
    prediction: str = "eps"
    lr_decay: str = "none"
    label_dropout: float = 0.2
    channels_last: bool = False
    cpu_bf16: bool | str = False
    checkpoint_every_s: float = 300.0
    val_every: int = 200
    val_timesteps: tuple = VAL_TIMESTEPS
    val_max_slabs: int = 16
    log_every: int = 10
    seed: int = 0

    def __post_init__(self):
        """Check every value, naming its `prior.train` key; convert `augment` and `val_timesteps`."""
        lowest = {"steps": 0, "batch_size": 1, "grad_accum": 1, "warmup_steps": 0, "ema_update_every": 1,
                  "checkpoint_every_s": 0}
        for key, low in lowest.items():
            value = getattr(self, key)
            if not _is_number(value) or value < low:
                raise ConfigError(f"prior.train.{key} must be a number >= {low}, got {value!r}")
        if not _is_number(self.lr) or self.lr <= 0:
            raise ConfigError(f"prior.train.lr must be a number > 0, got {self.lr!r}")
        for key, ok, expected in (("ema_decay", lambda v: 0 <= v <= 1, "in [0, 1]"),
                                  ("label_dropout", lambda v: 0 <= v < 1, "in [0, 1)")):
            value = getattr(self, key)
            if not _is_number(value) or not ok(value):
                raise ConfigError(f"prior.train.{key} must be {expected}, got {value!r}")
        _check_cpu_bf16(self.cpu_bf16)
        if self.lr_decay not in LR_DECAYS:
            raise ConfigError(f"prior.train.lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")
        GaussianDiffusion.check_min_snr_gamma(self.min_snr_gamma)
        GaussianDiffusion.check_prediction(self.prediction)
        object.__setattr__(self, "augment", intensity_augment(self.augment))
        object.__setattr__(self, "val_timesteps", tuple(self.val_timesteps))

    @classmethod
    def from_config(cls, train_cfg: dict, *, seed: int, augment: dict | None = None, augment_rolls: bool = False,
                    steps: int | None = None) -> TrainSettings:
        """Settings from a validated `prior.train` dict; `steps`, where given, overrides its steps.

        Keys it leaves out take the defaults above; a key that is no training setting is a
        ConfigError naming it."""
        unknown = sorted(set(train_cfg) - CONFIG_KEYS)
        if unknown:
            raise ConfigError(f"prior.train.{unknown[0]} is not a training setting (known: {sorted(CONFIG_KEYS)})")
        return cls(**{**train_cfg, **({} if steps is None else {"steps": steps})}, seed=seed, augment=augment,
                   augment_rolls=augment_rolls)

    def lr_at(self, step: int) -> float:
        """Learning rate of the optimiser step after `step` steps: lr * min(1, (step + 1) / warmup_steps),
        times the decay after the warm-up (`lr_decay`: 1; 1 - f; (1 + cos(pi f)) / 2, with f the
        fraction of the post-warm-up steps done)."""
        warm = self.lr * min(1.0, (step + 1) / max(self.warmup_steps, 1))
        if self.lr_decay == "none":
            return warm
        done = min(max(step - self.warmup_steps, 0) / max(self.steps - self.warmup_steps, 1), 1.0)
        return warm * (1.0 - done if self.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * done)))

    def record(self, model_cfg: dict, classes: tuple[str, ...] = ()) -> dict:
        """The setting that a checkpoint and a model file store, in JSON types: a checkpoint
        resumes only under an equal record. Keys of options left off are omitted, so files
        from before an option existed stay current."""
        model = {**DEFAULT_CONFIG, **model_cfg, **({"n_classes": len(classes)} if classes else {})}
        return plain_json({
            "model": model, "batch_size": self.batch_size, "lr": self.lr, "grad_accum": self.grad_accum,
            "ema_decay": self.ema_decay, "ema_update_every": self.ema_update_every,
            "warmup_steps": self.warmup_steps, "augment_flips": self.augment_flips, "seed": self.seed,
            "timesteps": TIMESTEPS, "cpu_bf16": self.cpu_bf16,
            **({"augment": self.augment.as_dict()} if self.augment.active else {}),
            **({"augment_rolls": True} if self.augment_rolls else {}),
            **({"min_snr_gamma": float(self.min_snr_gamma)} if self.min_snr_gamma is not None else {}),
            **({"prediction": self.prediction} if self.prediction != "eps" else {}),
            **({"lr_decay": self.lr_decay} if self.lr_decay != "none" else {}),
            **({"classes": list(classes), "label_dropout": self.label_dropout} if classes else {})})


# The keys of the `prior.train` config section: every field but those the pipeline sets elsewhere.
CONFIG_KEYS = frozenset(f.name for f in fields(TrainSettings)) - {
    "augment", "augment_rolls", "seed", "val_timesteps", "val_max_slabs", "log_every"}
