"""DRIFT: Diffusion-Refined Initialization for Multi-slice Reconstruction (SPEC 5).

N candidate volumes from the unconditional partitioned prior are scored against what the
measurement shows directly (`problem.score`: SSIM with the data range of the measurement, no
ground truth), and the best one starts K iterations of the problem's physics solver. The same
solver with the same K from the naive start (`physics_only`) is DRIFT's physics-only twin, so
the difference between the two is the prior's contribution.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from physdiff.errors import ConfigError, InputError


@dataclass
class DRIFTResult:
    """The reconstruction (S, H, W), every candidate's score, the chosen index, and timings."""

    volume: np.ndarray
    scores: list[float] = field(default_factory=list)
    best: int = -1
    seconds: float = 0.0


def score_candidates(candidates: np.ndarray, problem, *, progress: bool = False) -> tuple[np.ndarray, list[float]]:
    """DRIFT's scores of `candidates` (N, S, H, W, data units): each aligned first where the
    problem asks for it (`align_candidates`, ours: each at its best lateral shift). Returns the
    candidates as scored and their scores."""
    if getattr(problem, "align_candidates", False):
        candidates = np.stack([problem.align(c) for c in tqdm(candidates, desc="DRIFT shifts", disable=not progress,
                                                                leave=False)])
    scores = [problem.score(c) for c in tqdm(candidates, desc="DRIFT scores", disable=not progress, leave=False)]
    return candidates, scores


def drift(candidates: np.ndarray, problem, *, n_iter: int, progress: bool = True) -> DRIFTResult:
    """Score `candidates` (N, S, H, W, data units) against the measurement; refine the best.

    Ties go to the first candidate.
    """
    candidates = np.asarray(candidates, np.float32)
    if candidates.ndim != 4 or tuple(candidates.shape[1:]) != tuple(problem.shape):
        raise InputError(f"DRIFT candidates: expected (N, {', '.join(map(str, problem.shape))}), "
                         f"got {candidates.shape}")
    if len(candidates) == 0:
        raise InputError("DRIFT candidates: none given")
    if not np.isfinite(candidates).all():
        raise InputError("DRIFT candidates: hold NaN or infinite values")
    if n_iter < 0:
        raise ConfigError(f"recon.drift.n_iter must be >= 0, got {n_iter}")
    start = time.perf_counter()
    candidates, scores = score_candidates(candidates, problem, progress=progress)
    best = int(np.argmax(scores))
    volume = problem.solve(candidates[best], n_iter) if n_iter else candidates[best]
    return DRIFTResult(volume=np.asarray(volume, np.float32), scores=[float(s) for s in scores], best=best,
                       seconds=time.perf_counter() - start)


def physics_only(problem, *, n_iter: int) -> DRIFTResult:
    """DRIFT's twin: the same solver and K from the naive start (zero-filled image; V = 0)."""
    start = time.perf_counter()
    volume = problem.solve(problem.naive_start(), n_iter)
    return DRIFTResult(volume=np.asarray(volume, np.float32), seconds=time.perf_counter() - start)
