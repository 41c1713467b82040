"""Distinct GPUs for concurrent local jobs.

Under SLURM the scheduler gives each job its own GPUs (it sets CUDA_VISIBLE_DEVICES). Snakemake's
local executor only counts the `gpu` resource (`snakemake --cores 16 --resources gpu=4`): it
starts every job with the same environment, so every job that asked for a GPU used cuda:0.

`claim_gpus(n)`, which `physdiff.workflow.run_step` calls with the rule's `gpu` resource before
the job touches CUDA, takes `n` of this machine's GPUs that no other running job holds and sets
CUDA_VISIBLE_DEVICES to them, so the job's cuda:0 .. cuda:n-1 are its own. A GPU is held through
an exclusive `flock` on a file in a lock folder shared by every job of the machine; the kernel
drops the lock when the job's process ends, however it ends, so nothing is left to clean up.
Snakemake starts no more jobs than `--resources gpu=N` allows, so with N at most the number of
GPUs every job finds enough free ones; where it does not (N larger than the GPUs, or another run
holds some), the job shares busy ones and logs a warning instead of waiting.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import MutableMapping, Sequence

log = logging.getLogger("physdiff")

# Held for the life of the process: closing a file would release its lock.
_held: list[int] = []


def visible_gpus(environ: MutableMapping[str, str] | None = None,
                 driver_dir: str | os.PathLike = "/proc/driver/nvidia/gpus") -> list[str]:
    """The GPUs a job on this machine may choose from, as CUDA_VISIBLE_DEVICES entries.

    The entries of CUDA_VISIBLE_DEVICES where it is set (a user's restriction; empty or "-1"
    hides every GPU), else "0" .. "n-1" for the n GPUs of the NVIDIA driver (read from
    `driver_dir`, which does not initialise CUDA)."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        entries = [e.strip() for e in environ["CUDA_VISIBLE_DEVICES"].split(",") if e.strip()]
        # CUDA ignores an entry that names no device and every entry after it
        if "-1" in entries:
            entries = entries[: entries.index("-1")]
        return entries
    try:
        n = len(os.listdir(driver_dir))
    except OSError:
        return []
    return [str(i) for i in range(n)]


def default_lock_dir() -> Path:
    """The lock folder shared by the machine's jobs: $PHYSDIFF_GPU_LOCK_DIR, else in the temp dir."""
    return Path(os.environ.get("PHYSDIFF_GPU_LOCK_DIR") or Path(tempfile.gettempdir()) / "physdiff-gpu-locks")


def _try_lock(lock_dir: Path, device: str) -> int | None:
    """An fd holding the exclusive lock of `device`, or None where another process holds it."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", device)
    fd = os.open(lock_dir / f"gpu-{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def claim_gpus(n: int, *, pool: Sequence[str] | None = None, lock_dir: str | os.PathLike | None = None,
               environ: MutableMapping[str, str] | None = None) -> list[str] | None:
    """Take `n` GPUs of `pool` (default `visible_gpus()`) that no other process holds, and set
    CUDA_VISIBLE_DEVICES in `environ` (default os.environ) to them; returns them.

    Returns None and changes nothing where there is nothing to choose: `n` < 1, a SLURM job (the
    scheduler chose), or no GPU. Where fewer than `n` are free, the job takes the free ones and
    then busy ones in pool order (shared, with a warning), at most every GPU of the pool. The
    locks last as long as this process."""
    environ = os.environ if environ is None else environ
    if n < 1 or "SLURM_JOB_ID" in environ:
        return None
    pool = list(visible_gpus(environ) if pool is None else pool)
    if not pool:
        return None
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(lock_dir, 0o1777)  # every user's jobs share the machine's GPUs
    except OSError:
        pass
    chosen = []
    for device in pool:
        if len(chosen) == n:
            break
        fd = _try_lock(lock_dir, device)
        if fd is not None:
            _held.append(fd)
            chosen.append(device)
    shared = [d for d in pool if d not in chosen][: max(n - len(chosen), 0)]
    if shared:
        log.warning("%d GPU(s) asked for, %d free of %s: sharing %s with other jobs (is --resources gpu "
                    "larger than the number of GPUs, or does another run use them?)",
                    n, len(chosen), ",".join(pool), ",".join(shared))
        chosen += shared
    if len(chosen) < n:
        log.warning("%d GPU(s) asked for, but only %d visible (%s)", n, len(pool), ",".join(pool))
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        log.warning("CUDA was initialised before the job chose its GPUs: CUDA_VISIBLE_DEVICES=%s has no effect",
                    ",".join(chosen))
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
    return chosen
