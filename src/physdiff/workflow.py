"""Glue between Snakemake's `script:` object and the package: logging, threads, clean errors.

Every workflow script is a thin adapter:

    from physdiff.workflow import run_step
    def main(smk): ...
    run_step(snakemake, main)

`run_step` sends log records and warnings to the rule's log file (and stderr), caps the thread
pools at the rule's `threads`, gives a job that declares `gpu` GPUs of its own when run locally
on a multi-GPU machine (`use_own_gpus`), and turns a `PhysdiffError` (bad input, bad config, missing
extra) into a one-paragraph message and exit status 1, so users see what to fix rather than
a stack trace. Snakemake then deletes the job's partial outputs. The `physdiff` command
(`physdiff.cli`) does the same for its subcommands.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable

from physdiff.errors import PhysdiffError

log = logging.getLogger("physdiff")


def set_threads(n: int) -> None:
    """Cap torch and BLAS thread pools at `n` (Snakemake's `threads`)."""
    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # torch is a dependency, but keep data-only scripts importable without it
        pass


def setup_logging(logfile: str | None) -> None:
    """Log INFO and above to `logfile` (if given) and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        os.makedirs(os.path.dirname(logfile) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)


def use_own_gpus(smk: Any) -> list[str] | None:
    """Give a job that declares `gpu=n` n GPUs no other running job holds (CUDA_VISIBLE_DEVICES;
    `physdiff.devices.claim_gpus`): on a multi-GPU machine, local jobs run with `--resources gpu=N`
    then use distinct devices. No change under SLURM, which chose the job's GPUs, or without GPUs."""
    from physdiff.devices import claim_gpus

    resources = getattr(smk, "resources", None)
    try:
        n = int(getattr(resources, "gpu", 0) or 0)
    except (TypeError, ValueError):
        return None
    chosen = claim_gpus(n)
    if chosen:
        log.info("GPU(s) %s of this machine for this job (CUDA_VISIBLE_DEVICES)", ",".join(chosen))
    return chosen


def run_step(smk: Any, main: Callable[[Any], None]) -> None:
    """Run `main(smk)` with logging and threads set up; exit 1 with a clear message on bad input."""
    setup_logging(smk.log[0] if len(smk.log) else None)
    set_threads(getattr(smk, "threads", 1))
    use_own_gpus(smk)
    name = getattr(smk, "rule", "step")
    start = time.perf_counter()
    try:
        main(smk)
    except PhysdiffError as exc:
        log.error("%s failed: %s", name, exc)
        sys.exit(1)
    log.info("%s finished in %.1f s", name, time.perf_counter() - start)
