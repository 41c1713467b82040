"""DRIFT: Diffusion-Refined Initialization for Multi-slice Reconstruction (docs/method.md, "DRIFT").

N candidate volumes from the unconditional partitioned prior are scored against what the
measurement shows directly (`problem.score`: SSIM with the data range of the measurement, no
ground truth), and the best one starts K iterations of the problem's physics solver. The same
solver with the same K from the naive start (`physics_only`) is DRIFT's physics-only twin, so
the difference between the two is the prior's contribution.

Ours, beyond the paper: `refine_top` M > 1 refines the M best-scored candidates K iterations each
and keeps the one whose result fits the measurement best (lowest `problem.loss`, the data term
in data units). It still sees only the measurement; M = 1 is the paper's pick by score. The
score alone is a weak guide where the measurement's own image shows little of the volume (a
4D-STEM bright field against an 8-slice potential), and the data loss after K iterations is a
sharper one (benchmarks/studies/prior_study.md, "DRIFT's pool size").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from physdiff.errors import ConfigError, InputError


@dataclass
class DRIFTResult:
    """The reconstruction (S, H, W), every candidate's score, the chosen index, the candidates
    refined (best score first) with their data loss and volume after refining, and timings.
    `refined_volumes[0]` is the paper's pick (M = 1) refined."""

    volume: np.ndarray
    scores: list[float] = field(default_factory=list)
    best: int = -1
    seconds: float = 0.0
    refined: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    refined_volumes: list[np.ndarray] = field(default_factory=list)


def score_candidates(candidates: np.ndarray, problem, *, progress: bool = False) -> tuple[np.ndarray, list[float]]:
    """DRIFT's scores of `candidates` (N, S, H, W, data units): each aligned first where the
    problem asks for it (`align_candidates`, ours: each at its best lateral shift). Returns the
    candidates as scored and their scores."""
    if getattr(problem, "align_candidates", False):
        candidates = np.stack([problem.align(c) for c in tqdm(candidates, desc="DRIFT shifts", disable=not progress,
                                                                leave=False)])
    scores = [problem.score(c) for c in tqdm(candidates, desc="DRIFT scores", disable=not progress, leave=False)]
    return candidates, scores


def ranked(scores) -> list[int]:
    """Candidate indices, best score first; ties keep the candidates' order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def lowest_loss(losses, m: int) -> int:
    """Position, among the first `m` refined candidates, of the lowest data loss (ties: the first)."""
    head = np.asarray(losses[:m], float)
    return int(np.argmin(np.where(np.isfinite(head), head, np.inf)))


def check_candidates(candidates: np.ndarray, problem) -> np.ndarray:
    """`candidates` as float32 (N, S, H, W) of the problem's shape, finite; else an InputError."""
    candidates = np.asarray(candidates, np.float32)
    if candidates.ndim != 4 or tuple(candidates.shape[1:]) != tuple(problem.shape):
        raise InputError(f"DRIFT candidates: expected (N, {', '.join(map(str, problem.shape))}), "
                         f"got {candidates.shape}")
    if len(candidates) == 0:
        raise InputError("DRIFT candidates: none given")
    if not np.isfinite(candidates).all():
        raise InputError("DRIFT candidates: hold NaN or infinite values")
    return candidates


def drift(candidates: np.ndarray, problem, *, n_iter: int, refine_top: int = 1, progress: bool = True) -> DRIFTResult:
    """Score `candidates` (N, S, H, W, data units) against the measurement; refine the best.

    With `refine_top` M > 1, the M best-scored candidates are refined and the result with the
    lowest data loss is returned (M above N refines all N). Ties go to the first candidate.
    """
    candidates = check_candidates(candidates, problem)
    if n_iter < 0:
        raise ConfigError(f"recon.drift.n_iter must be >= 0, got {n_iter}")
    if refine_top < 1:
        raise ConfigError(f"recon.drift.refine_top must be >= 1, got {refine_top}")
    start = time.perf_counter()
    candidates, scores = score_candidates(candidates, problem, progress=progress)
    refined = ranked(scores)[:refine_top]
    volumes, losses = [], []
    for i in tqdm(refined, desc="DRIFT refines", disable=not progress or len(refined) == 1, leave=False):
        volumes.append(np.asarray(problem.solve(candidates[i], n_iter) if n_iter else candidates[i], np.float32))
        losses.append(float(problem.loss(volumes[-1])))
    pick = lowest_loss(losses, len(losses))
    return DRIFTResult(volume=volumes[pick], scores=[float(s) for s in scores], best=refined[pick],
                       seconds=time.perf_counter() - start, refined=refined, losses=losses, refined_volumes=volumes)


def physics_only(problem, *, n_iter: int) -> DRIFTResult:
    """DRIFT's twin: the same solver and K from the naive start (zero-filled image; V = 0)."""
    start = time.perf_counter()
    volume = problem.solve(problem.naive_start(), n_iter)
    return DRIFTResult(volume=np.asarray(volume, np.float32), seconds=time.perf_counter() - start)
