"""A video U-Net (Ho et al. 2022) whose frames are the slices of a multi-slice object.

Input and output are (B, 1, S, H, W): S slices of H x W pixels. Convolutions act per slice
(Conv3d kernels (1, 3, 3)); attention is factorised into spatial attention within a slice
(only at the feature-map heights in `attn_resolutions`, because it costs O((HW)^2)) and
attention along the slice axis at every pixel (at the heights in `temporal_attn_resolutions`,
None = every level), with rotary position embedding along slices.
Resampling is spatial only, so S may be any size, odd included. Given `image_size` (the slice
height), attention modules are built only at the levels where they run; without it they are
built at every level (the older layout) and switched on by the feature-map size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from physdiff.errors import ConfigError

DEFAULT_CONFIG: dict[str, Any] = {
    "dim": 16,
    "dim_mults": (1, 2, 4),
    "res_blocks": 1,
    "attn_resolutions": (16,),
    "temporal_attn": True,
    "temporal_attn_resolutions": None,
    "heads": 4,
    "head_dim": 16,
    "dropout": 0.0,
    "groups": 8,
    "image_size": None,
    "upsample": "conv_first",
    "padding": "zeros",
}
UPSAMPLE = ("conv_first", "interpolate_first")
PADDING = ("zeros", "circular")


def _wrap(x: torch.Tensor) -> torch.Tensor:
    """Pad the last two axes by one pixel taken from the opposite edge (periodic boundary).

    Two concatenations: the backward of F.pad's circular mode cost a 3x3 conv about 55 % more
    time on the CPU, this about 10 % (a (4, 16, 4, 64, 64) map, one thread)."""
    x = torch.cat([x[..., -1:, :], x, x[..., :1, :]], dim=-2)
    return torch.cat([x[..., -1:], x, x[..., :1]], dim=-1)


class PeriodicConv3d(nn.Conv3d):
    """A (1, k, k) convolution whose slices wrap around in H and W: the field of view is a torus,
    as a periodic supercell's potential is (4D-STEM), and no pixel knows where the border is.
    Same parameters as nn.Conv3d, so weights move between the two."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(_wrap(x), self.weight, self.bias, self.stride)


def _conv(c_in: int, c_out: int, padding: str = "zeros", stride=1) -> nn.Conv3d:
    """Per-slice 2D convolution written as a Conv3d with kernel (1, 3, 3), zero or periodic padding."""
    if padding == "circular":
        return PeriodicConv3d(c_in, c_out, (1, 3, 3), stride)
    return nn.Conv3d(c_in, c_out, (1, 3, 3), stride, padding=(0, 1, 1))


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer's weights so each residual branch starts as the identity (guided diffusion)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of diffusion steps t (B,) -> (B, dim), periods up to 10^4 steps."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding along axis -2 of (..., S, d), d even (Su et al. 2021).

    Rotating q and k by angle s * w makes q_m . k_n depend only on the slice offset m - n,
    which is a relative position bias along the slice axis.
    """
    s, d = x.shape[-2], x.shape[-1]
    freqs = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    angles = torch.arange(s, device=x.device, dtype=torch.float32)[:, None] * freqs[None]  # (S, d/2)
    # Pairs (x_2i, x_2i+1) as complex numbers times e^{i angle}: one complex multiply instead of
    # four real ones on stride-2 views, which cost about 3.5x as much forward and backward.
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], d // 2, 2))  # (..., S, d/2)
    out = torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles))  # (..., S, d/2, 2)
    return out.flatten(-2).to(x.dtype)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the timestep embedding as a scale and shift."""

    def __init__(self, c_in: int, c_out: int, *, emb_dim: int, groups: int, dropout: float, padding: str = "zeros"):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = _conv(c_in, c_out, padding)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zero(_conv(c_out, c_out, padding))
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = rearrange(self.emb(F.silu(emb)), "b (two c) -> two b c 1 1 1", two=2)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return h + self.skip(x)


# cuDNN's fused attention failed its backward on CUDA (torch 2.11, H200: "mha_graph.execute ...
# is_good()") for slice attention at the paper size, 4 x 128 x 128 pixels = 65536 sequences of
# 8 slices x 2 heads (benchmarks/cuda_paths.py); chunks of at most this many sequence-heads run.
CUDA_ATTENTION_CHUNK = 32768


# On the CPU, oneDNN's bf16 flash attention ran at about half the speed of its fp32 one, forward
# and backward, and for the 8-token slice sequences a plain bf16 matmul-softmax-matmul beat both
# (benchmarks/prior.py --compare: 1.19x more training steps per CPU-second with bf16 autocast).
# Sequences up to this length take the matmul path; longer ones run fp32 flash attention.
CPU_SHORT_SEQUENCE = 32


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v of (N, heads, L, d), by the kernel that is fastest for the device and dtype.

    CUDA: scaled_dot_product_attention, in chunks over N where N is large. CPU fp32: the same.
    CPU bf16 (training under autocast): explicit matmuls with an fp32 softmax for L up to
    CPU_SHORT_SEQUENCE, else fp32 scaled_dot_product_attention; the result is bf16 either way.
    """
    if q.is_cuda:
        n, heads = q.shape[:2]
        chunk = max(1, CUDA_ATTENTION_CHUNK // heads)
        if n <= chunk:
            return F.scaled_dot_product_attention(q, k, v)
        return torch.cat([F.scaled_dot_product_attention(q[i:i + chunk], k[i:i + chunk], v[i:i + chunk])
                          for i in range(0, n, chunk)])
    if q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v)
    if q.shape[-2] <= CPU_SHORT_SEQUENCE:
        weights = torch.matmul(q, k.transpose(-1, -2)).float().mul_(q.shape[-1] ** -0.5).softmax(dim=-1)
        return torch.matmul(weights.to(v.dtype), v)
    with torch.autocast("cpu", enabled=False):  # autocast would cast the fp32 inputs back to bf16
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)


class Attention(nn.Module):
    """Multi-head self-attention within slices ("spatial") or along slices ("slice")."""

    def __init__(self, channels: int, *, axis: str, heads: int, head_dim: int, groups: int):
        super().__init__()
        # At most `heads` heads of `head_dim`, but no wider than the channels: a 4x wider
        # projection at the full-resolution levels cost 4x the time for no measurable gain.
        self.axis, self.heads = axis, min(heads, max(1, channels // head_dim))
        inner = self.heads * head_dim
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * inner, bias=False)
        self.out = _zero(nn.Linear(inner, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, s, h, w = x.shape
        # One permute to tokens-last layout, then Linear projections on contiguous channels:
        # cheaper than 1x1 convs followed by three permuted copies of q, k and v.
        if self.axis == "spatial":
            # tokens are the pixels of one slice: (b, c, s, h, w) -> (b*s, h*w, c)
            pattern, back = "b c s h w -> (b s) (h w) c", "(b s) (h w) c -> b c s h w"
        else:
            # tokens are the slices at one pixel: (b, c, s, h, w) -> (b*h*w, s, c)
            pattern, back = "b c s h w -> (b h w) s c", "(b h w) s c -> b c s h w"
        tokens = rearrange(self.norm(x), pattern)
        # (N, L, 3*heads*d) -> three (N, heads, L, d)
        q, k, v = rearrange(self.qkv(tokens), "N L (three n d) -> three N n L d", three=3, n=self.heads)
        if self.axis == "slice":
            q, k = rotary(q), rotary(k)
        o = _attend(q, k, v)
        o = self.out(rearrange(o, "N n L d -> N L (n d)"))
        return x + rearrange(o, back, b=b, s=s, h=h, w=w)


def _final_conv(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """The last (C -> 1) per-slice conv as a 2D conv on channels-last frames.

    oneDNN's Conv3d with one output channel took about twice as long (forward and backward)
    as the same weights applied per frame in channels-last layout.
    """
    b, c, s, h, w = x.shape
    frames = x.transpose(1, 2).reshape(b * s, c, h, w).contiguous(memory_format=torch.channels_last)
    periodic = isinstance(conv, PeriodicConv3d)
    y = F.conv2d(_wrap(frames) if periodic else frames, conv.weight.squeeze(2), conv.bias, padding=0 if periodic else 1)  # (b*s, c_out, h, w)
    return y.reshape(b, s, -1, h, w).transpose(1, 2).contiguous()


class Level(nn.Module):
    """Residual blocks of one resolution, then spatial and slice attention (run by VideoUNet)."""

    def __init__(self, c_in: int, c_out: int, *, n_blocks: int, spatial: bool, temporal: bool, cfg: dict):
        super().__init__()
        kw = dict(emb_dim=cfg["emb_dim"], groups=cfg["groups"], dropout=cfg["dropout"], padding=cfg["padding"])
        self.blocks = nn.ModuleList(ResBlock(c_in if i == 0 else c_out, c_out, **kw) for i in range(n_blocks))
        akw = dict(heads=cfg["heads"], head_dim=cfg["head_dim"], groups=cfg["groups"])
        self.spatial = Attention(c_out, axis="spatial", **akw) if spatial else nn.Identity()
        self.temporal = Attention(c_out, axis="slice", **akw) if temporal else nn.Identity()


class VideoUNet(nn.Module):
    """Noise-prediction U-Net eps_theta(x_t, t) on (B, 1, S, H, W) slabs."""

    def __init__(self, *, dim: int = 16, dim_mults=(1, 2, 4), res_blocks: int = 1, attn_resolutions=(16,),
                 temporal_attn: bool = True, temporal_attn_resolutions=None, heads: int = 4, head_dim: int = 16, dropout: float = 0.0,
                 groups: int = 8, channels: int = 1, image_size: int | None = None, upsample: str = "conv_first",
                 padding: str = "zeros", n_classes: int = 0):
        super().__init__()
        chs = [dim * int(m) for m in dim_mults]
        if dim < 1 or not chs or res_blocks < 1:
            raise ConfigError(f"model: dim ({dim}), dim_mults ({dim_mults}) and res_blocks ({res_blocks}) must be positive")
        bad = [c for c in [dim, *chs] if c % groups]
        if bad:
            raise ConfigError(f"model.groups={groups} must divide every channel count; {bad} are not divisible")
        if upsample not in UPSAMPLE:
            raise ConfigError(f"model.upsample must be one of {UPSAMPLE}, got {upsample!r}")
        if padding not in PADDING:
            raise ConfigError(f"model.padding must be one of {PADDING}, got {padding!r}")
        self.levels, self.attn_resolutions = len(chs), {int(r) for r in attn_resolutions}
        self.temporal_sizes = None if temporal_attn_resolutions is None else {int(r) for r in temporal_attn_resolutions}
        factor = 2 ** (len(chs) - 1)
        if image_size is not None and (int(image_size) < factor or int(image_size) % factor):
            raise ConfigError(f"model.image_size={image_size} must be a positive multiple of 2^(levels-1) = {factor}")
        self.image_size, self.upsample_mode = None if image_size is None else int(image_size), upsample
        emb_dim = 4 * dim
        cfg = dict(emb_dim=emb_dim, groups=groups, dropout=dropout, heads=heads, head_dim=head_dim, padding=padding)
        self.dim = dim
        self.time_mlp = nn.Sequential(nn.Linear(dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # Class conditioning (ours; the contrasts of mri.train_contrasts): an embedding added to the
        # time embedding, with one more row, index n_classes, for "any class" (the label withheld).
        # `label` is the class that forward() uses when it is given none: 0 unless set.
        if int(n_classes) < 0:
            raise ConfigError(f"model.n_classes must be >= 0, got {n_classes}")
        self.n_classes, self.label = int(n_classes), 0
        self.class_emb = nn.Embedding(self.n_classes + 1, emb_dim) if self.n_classes else None
        self.init_conv = _conv(channels, dim, padding)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        # Attention placement depends on the feature-map size: known from image_size, else only
        # from the input, in which case the modules are built for every level and switched on in
        # forward(). Unused modules would cost optimiser and EMA time and bloat checkpoints.
        def spatial(i):
            return self.image_size is None or self.image_size >> i in self.attn_resolutions

        def temporal(i):
            size = None if self.image_size is None else self.image_size >> i
            return temporal_attn and (size is None or self.temporal_sizes is None or size in self.temporal_sizes)

        c_prev = dim
        for i, c in enumerate(chs):
            self.down.append(Level(c_prev, c, n_blocks=res_blocks, spatial=spatial(i), temporal=temporal(i), cfg=cfg))
            last = i == len(chs) - 1
            self.downsample.append(nn.Identity() if last else _conv(c, c, padding, stride=(1, 2, 2)))
            c_prev = c
        self.mid1 = ResBlock(chs[-1], chs[-1], emb_dim=emb_dim, groups=groups, dropout=dropout, padding=padding)
        last = len(chs) - 1
        self.mid_attn = Level(chs[-1], chs[-1], n_blocks=1, spatial=spatial(last), temporal=temporal(last), cfg=cfg)
        for i in reversed(range(len(chs))):
            self.up.append(Level(2 * chs[i], chs[i], n_blocks=res_blocks, spatial=spatial(i), temporal=temporal(i), cfg=cfg))
            self.upsample.append(nn.Identity() if i == 0 else _conv(chs[i], chs[i - 1], padding))
        self.final = nn.Sequential(nn.GroupNorm(groups, chs[0]), nn.SiLU(), _zero(_conv(chs[0], channels, padding)))

    def _level(self, level: Level, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in level.blocks:
            x = block(x, emb)
        if x.shape[-2] in self.attn_resolutions:
            x = level.spatial(x)
        if self.temporal_sizes is None or x.shape[-2] in self.temporal_sizes:
            x = level.temporal(x)
        return x

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict eps for x_t of shape (B, C, S, H, W) at integer steps t of shape (B,); a class
        model takes class labels y (B,) in 0..n_classes (n_classes: any class), else `self.label`."""
        if x.ndim != 5:
            raise ConfigError(f"VideoUNet expects (B, C, S, H, W), got shape {tuple(x.shape)}")
        factor = 2 ** (self.levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ConfigError(
                f"slice size {tuple(x.shape[-2:])} must be divisible by 2^(levels-1) = {factor} "
                f"for dim_mults with {self.levels} levels; crop or pad the slices, or use fewer levels")
        if self.image_size is not None and x.shape[-2] != self.image_size:
            raise ConfigError(f"this model was built for slices of height model.image_size={self.image_size}, "
                              f"got {tuple(x.shape[-2:])}")
        emb = self.time_mlp(timestep_embedding(t.reshape(-1).expand(x.shape[0]), self.dim))
        if self.class_emb is not None:
            if y is None:
                y = torch.full((x.shape[0],), int(self.label), dtype=torch.long, device=x.device)
            emb = emb + self.class_emb(y.reshape(-1).expand(x.shape[0]).to(x.device)).to(emb.dtype)
        elif y is not None:
            raise ConfigError("class labels given to a model built without classes (model.n_classes = 0)")
        h = self.init_conv(x)
        skips = []
        for level, down in zip(self.down, self.downsample):
            h = self._level(level, h, emb)
            skips.append(h)
            h = down(h)
        h = self._level(self.mid_attn, self.mid1(h, emb), emb)
        for level, up in zip(self.up, self.upsample):
            h = self._level(level, torch.cat([h, skips.pop()], dim=1), emb)
            if isinstance(up, nn.Identity):
                continue
            # conv_first convolves at the coarse size, then repeats pixels: a quarter of the cost
            # of convolving the upsampled map, whose 2x2 blocks the next level's convs smooth.
            if self.upsample_mode == "conv_first":
                h = F.interpolate(up(h), scale_factor=(1, 2, 2), mode="nearest")
            else:
                h = up(F.interpolate(h, scale_factor=(1, 2, 2), mode="nearest"))
        norm, act, conv = self.final
        return _final_conv(conv, act(norm(h)))


def build_unet(cfg: dict | None = None) -> VideoUNet:
    """Build a VideoUNet from a plain config dict; unknown keys are a ConfigError."""
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(DEFAULT_CONFIG) - {"channels", "n_classes"}  # n_classes only where > 0
    if unknown:
        raise ConfigError(f"model config has unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
    full = {**DEFAULT_CONFIG, **cfg}
    full["dim_mults"] = tuple(int(m) for m in full["dim_mults"])
    full["attn_resolutions"] = tuple(int(r) for r in full["attn_resolutions"])
    if full["image_size"] is not None:
        full["image_size"] = int(full["image_size"])
    if full["temporal_attn_resolutions"] is not None:
        full["temporal_attn_resolutions"] = tuple(int(r) for r in full["temporal_attn_resolutions"])
    return VideoUNet(**full)
