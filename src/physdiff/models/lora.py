"""Low-rank adapters (LoRA) on the partition U-Nets, for per-scan adaptation of the prior.

An adapter adds a trainable low-rank term to a frozen weight: W' = W + (alpha / r) B A, with
A (r, fan_in) drawn small and B (out, r) zero, so the adapted network starts equal to the
plain one. It is attached as a `torch.nn.utils.parametrize` parametrization of the layer's
`weight`, so every use of that weight sees W', whatever the layer's forward does with it.

Why not `peft`: two of our layers use their weight outside a standard forward.
`PeriodicConv3d` pads by wrapping the slices itself and convolves with padding 0, and the
U-Net's last convolution is applied as a 2D convolution on channels-last frames
(`physdiff.models.unet._final_conv`) by reading `conv.weight`. peft's LoRA wraps a layer and
adds a second convolution with the base layer's padding beside its forward: on the periodic
layers that branch would see unwrapped borders (and a map two pixels smaller), and on the
last layer it would never run. A parametrization of the weight covers both, in 60 lines.

Targets: every convolution with a 3 x 3 kernel (the ResBlocks', down- and upsampling, the
first and last) and the attention projections (`qkv`, `out` of spatial and slice attention).
The time and class embeddings and the 1 x 1 skips stay as they are.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from physdiff.errors import ConfigError


class LowRankDelta(nn.Module):
    """weight -> weight + scale * (up @ down).view_as(weight), with `up` zero at the start."""

    def __init__(self, shape: Sequence[int], rank: int, alpha: float, generator: torch.Generator | None = None):
        super().__init__()
        out, fan_in = int(shape[0]), int(math.prod(shape[1:]))
        rank = min(int(rank), out, fan_in)
        self.down = nn.Parameter(torch.randn(rank, fan_in, generator=generator) / math.sqrt(fan_in))
        self.up = nn.Parameter(torch.zeros(out, rank))
        self.scale = float(alpha) / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta = (self.up @ self.down).view_as(weight)
        return weight + self.scale * delta.to(weight.dtype)


def adapter_targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of the layers that take adapters: 3 x 3 convolutions and attention projections."""
    from physdiff.models.unet import Attention

    out = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv3d) and tuple(module.kernel_size[-2:]) != (1, 1):
            out.append((name, module))
        elif isinstance(module, Attention):
            out += [(f"{name}.qkv", module.qkv), (f"{name}.out", module.out)]
    return out


def check_adapter_settings(rank: int, alpha: float) -> None:
    if not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"recon.dart.adapt.rank must be an integer >= 1, got {rank!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"recon.dart.adapt.alpha must be a finite number > 0, got {alpha!r}")


def add_adapters(models: Sequence[nn.Module], *, rank: int = 4, alpha: float = 1.0, shared: bool = False,
                 seed: int = 0) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """Copies of the partition models with adapters, and the adapters' parameters.

    The given models are not touched: each is deep-copied, its own weights frozen
    (requires_grad False), and an adapter registered on every target layer. With `shared` one
    adapter set serves all G partitions (layer i of every model gets the same module, so the
    same low-rank change is added to each partition's own weights); the partitions must then be
    built alike and live on one device. Otherwise each partition gets its own set.
    """
    check_adapter_settings(rank, alpha)
    if not models:
        raise ConfigError("add_adapters: no partition models given")
    gen = torch.Generator().manual_seed(int(seed))
    copies = [copy.deepcopy(m) for m in models]
    for m in copies:
        m.requires_grad_(False)
    targets = [adapter_targets(m) for m in copies]
    if shared:
        shapes = [[tuple(layer.weight.shape) for _, layer in t] for t in targets]
        if any(s != shapes[0] for s in shapes):
            raise ConfigError("recon.dart.adapt.shared: the partition models are built differently, "
                              "so one adapter set cannot serve them all; set shared: false")
        devices = {p.device for m in copies for p in m.parameters()}
        if len(devices) > 1:
            raise ConfigError(f"recon.dart.adapt.shared: the partitions live on several devices {sorted(map(str, devices))}; "
                              "set shared: false")
    params: list[nn.Parameter] = []
    deltas: list[LowRankDelta] = []
    for g, model_targets in enumerate(targets):
        for i, (_, layer) in enumerate(model_targets):
            if shared and g > 0:
                delta = deltas[i]
            else:
                delta = LowRankDelta(layer.weight.shape, rank, alpha, gen).to(layer.weight.device)
                deltas.append(delta)
                params += [delta.down, delta.up]
            parametrize.register_parametrization(layer, "weight", delta)
    return copies, params


def base_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's own (frozen) weights, adapters left out: for checks that fitting never moves them."""
    return {k.replace(".parametrizations.weight.original", ".weight"): v
            for k, v in model.state_dict().items() if ".parametrizations.weight.0." not in k}
