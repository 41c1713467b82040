"""Memory per device of one partition model: a training step or a sampling forward pass.

A job's peak resident set size (Snakemake's `max_rss`) counts the Python interpreter, torch,
numpy and the other libraries, about 400 MB here whatever the model does, so on the CPU it
hides how the model's own memory scales with the partition count G. This module measures what
one device holds for the model instead: its parameters plus the peak growth of memory over one
training step (forward, backward, Adam, at the training batch and autocast of the model's own
config) or one sampling forward pass (no gradients), on a slab of the partition's slices.

Each measurement runs in a fresh process (`python -m physdiff.models.memory`), so memory that
an earlier computation freed cannot hide the growth. On CUDA the growth is that of
`torch.cuda.max_memory_allocated`; on the CPU that of the peak RSS (Linux VmHWM, reset with
`/proc/self/clear_refs` just before the measured step), with glibc's mmap threshold fixed so
freed tensors leave the resident set. Elsewhere (no /proc) the CPU growth is measured against
the process's lifetime peak and may read low.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from physdiff.errors import ConfigError, InputError

STAGES = ("train", "sample")


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss() -> int:
    """Reset the peak-RSS mark to the current RSS (Linux clear_refs 5); returns the current bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS") * 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss() -> int:
    """Peak resident bytes since the last `reset_peak_rss` (Linux), else since the process began."""
    try:
        return _status_kb("VmHWM") * 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# A fixed mmap threshold makes glibc hand large blocks back on free, so RSS follows the live
# tensors; with its default dynamic threshold freed blocks hide later growth. Set it in the
# environment of the fresh process that measures.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def peak_growth(dev: torch.device, step: Callable[[], object]) -> tuple[int, int]:
    """Run `step()` and return (bytes in use before it, peak bytes during it) on `dev`:
    CUDA allocations there, else the resident set (see `reset_peak_rss`)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = reset_peak_rss()
    step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        return base, torch.cuda.max_memory_allocated(dev)
    return base, peak_rss()


def measure(model_path: str, *, slices: int, batch: int, stage: str, device: str | None = None) -> dict:
    """In this process: MB for `stage` of the model in `model_path` on (batch, 1, slices, H, W).

    Returns {device, params_mb, growth_mb, total_mb}: total = parameters + peak growth.
    """
    from physdiff.models.diffusion import GaussianDiffusion
    from physdiff.models.train import load_model, use_bf16

    if stage not in STAGES:
        raise ConfigError(f"memory stage must be one of {STAGES}, got {stage!r}")
    if slices < 1 or batch < 1:
        raise ConfigError(f"need slices >= 1 and batch >= 1, got {slices} and {batch}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    model, meta = load_model(model_path, map_location=dev)
    size = int(meta["config"]["model"]["image_size"])
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    x = torch.rand(batch, 1, slices, size, size, device=dev) * 2 - 1
    t = torch.full((batch,), 500, device=dev, dtype=torch.long)
    bf16 = use_bf16(dev, meta["config"].get("cpu_bf16", False))
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if (stage == "train" and bf16) else nullcontext()
    with torch.no_grad(), autocast:
        model(x[:1, :, :1], t[:1])  # load kernels and thread pools before the baseline

    def sample() -> None:
        with torch.no_grad():
            model(x, t)

    def train_step() -> None:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        with autocast:
            loss = GaussianDiffusion().loss(model, x, generator=torch.Generator().manual_seed(0))
        loss.backward()
        opt.step()

    base, peak = peak_growth(dev, sample if stage == "sample" else train_step)
    growth = max(peak - base, 0) / 2**20
    return {"device": str(dev), "params_mb": params / 2**20, "growth_mb": growth, "total_mb": params / 2**20 + growth}


def measure_in_subprocess(model_path: str | os.PathLike, *, slices: int, batch: int, stage: str,
                          device: str | None = None, threads: int = 1) -> dict:
    """`measure` in a fresh Python process (see the module docstring); raises InputError on failure."""
    cmd = [sys.executable, "-m", "physdiff.models.memory", str(model_path), "--slices", str(slices),
           "--batch", str(batch), "--stage", stage, "--threads", str(threads)]
    if device:
        cmd += ["--device", device]
    env = {**os.environ, **MALLOC_ENV}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-5:])
        raise InputError(f"{model_path}: measuring the {stage} memory failed:\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Memory per device of one partition model (prints JSON).")
    ap.add_argument("model", help="a model.pt written by the train_prior rule")
    ap.add_argument("--slices", type=int, required=True, help="slices of the partition's slab")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--stage", choices=STAGES, required=True)
    ap.add_argument("--device", default=None, help="default: cuda where available, else cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.model, slices=args.slices, batch=args.batch, stage=args.stage, device=args.device)))


if __name__ == "__main__":
    main()
