"""Invertible maps between a modality's data units and the prior's [0, 1] range.

The diffusion prior works on [0, 1] (and [-1, 1] inside the network); the physics works in data
units. Every place that crosses between the two (training data, sampling, DART's physics step,
DRIFT's scoring) uses the transform that the pipeline stored beside the training data, never a
constant written by hand.

- MRI volumes are already scaled to [0, 1]: `IdentityTransform`.
- 4D-STEM potentials V (V·Å, non-negative) use a power law, u = (clip(V, 0) / scale) ** gamma,
  V = scale * clip(u, 0, 1) ** (1 / gamma). gamma = 1 is the plain division by the training
  maximum; gamma < 1 lifts light atoms out of the bottom of the range.

Both work on numpy arrays and torch tensors (and keep torch's autograd graph).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from physdiff.errors import InputError


def _clip(x: Any, lo: float, hi: float | None = None) -> Any:
    if isinstance(x, torch.Tensor):
        return x.clamp(lo, hi) if hi is not None else x.clamp_min(lo)
    return np.clip(x, lo, hi)


class IdentityTransform:
    """Data already in [0, 1] (MRI magnitudes)."""

    kind = "identity"

    def encode(self, x: Any) -> Any:
        """Data units -> [0, 1]."""
        return x

    def decode(self, u: Any) -> Any:
        """[0, 1] -> data units."""
        return u

    def to_dict(self) -> dict:
        return {"kind": self.kind}


class PowerTransform:
    """u = (clip(V, 0) / scale) ** gamma, with V in V·Å and u in [0, 1]; exact inverse on [0, 1]."""

    kind = "power"

    def __init__(self, scale: float, gamma: float = 1.0):
        if not (np.isfinite(scale) and scale > 0):
            raise InputError(f"power transform: scale must be a positive number (V·Å), got {scale}")
        if not (np.isfinite(gamma) and gamma > 0):
            raise InputError(f"power transform: gamma must be a positive number, got {gamma}")
        self.scale, self.gamma = float(scale), float(gamma)

    def encode(self, v: Any) -> Any:
        """Potential V (V·Å) -> u in [0, 1] (values above `scale` saturate at 1)."""
        u = _clip(v / self.scale, 0.0, 1.0)
        return u if self.gamma == 1.0 else u**self.gamma

    def decode(self, u: Any) -> Any:
        """u -> potential V (V·Å); u is clipped to [0, 1] first."""
        u = _clip(u, 0.0, 1.0)
        return self.scale * (u if self.gamma == 1.0 else u ** (1.0 / self.gamma))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "scale_V_A": self.scale, "gamma": self.gamma}


Transform = IdentityTransform | PowerTransform


def transform_from_dict(d: dict, *, source: str = "transform") -> Transform:
    """Build a transform from its stored form; an older {"scale_V_A": s} file means gamma = 1."""
    if not isinstance(d, dict):
        raise InputError(f"{source}: expected a JSON object, got {type(d).__name__}")
    kind = d.get("kind", "power" if "scale_V_A" in d else None)
    if kind == "identity":
        return IdentityTransform()
    if kind == "power":
        if "scale_V_A" not in d:
            raise InputError(f"{source}: a power transform needs the key 'scale_V_A' (V·Å)")
        try:
            return PowerTransform(float(d["scale_V_A"]), float(d.get("gamma", 1.0)))
        except (TypeError, ValueError) as err:
            raise InputError(f"{source}: {err}") from None
    raise InputError(f"{source}: unknown transform kind {kind!r}; expected 'identity' or 'power'")


def load_transform(path: str | os.PathLike) -> Transform:
    """Read a transform written by `save_transform` (or the prior data's scale.json)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"transform file {path} does not exist")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    return transform_from_dict(d, source=str(path))
