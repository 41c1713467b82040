"""Choose one positive hyperparameter on validation data so that the choice is not a grid edge.

`tune_scalar` is the generic helper for the baselines' regularisation weights (and DART/DRIFT's
hyperparameters): it scores a starting grid, extends it geometrically past whichever edge wins
(a bounded number of times), then refines around the best value, and says whether the winner
still lies on the edge of everything it tried.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import numpy as np

from physdiff.errors import ConfigError

log = logging.getLogger(__name__)


def tune_scalar(score_fn: Callable[[float], float], grid: Sequence[float], *, max_extend: int = 3,
                refine: int = 1, factor: float | None = None, lower: float = 0.0,
                upper: float = math.inf, zero: bool = False, name: str = "value") -> dict:
    """Maximise score_fn over a positive scalar: grid, geometric extension past edges, refinement.

    1. Score every value of `grid` (positive, any order).
    2. While the best value is the smallest (largest) tried and fewer than `max_extend`
       extensions were made, score best / factor (best * factor); values outside (lower, upper)
       are not tried, which ends the extension on that side.
    3. `refine` times, score the geometric midpoints between the best value and its neighbours.
    4. With `zero` (a weight whose natural bound is 0, such as an L1 weight), if the smallest
       value tried still wins, score 0 itself: a winning 0 is the bound of the domain, not an
       unsearched edge (the penalty does not help on this data).
    `factor` defaults to the grid's largest ratio between neighbours (3 for [0.001, 0.003, ...]),
    2 for a one-value grid. Ties go to the value scored first; NaN scores never win.

    Returns {"best": value, "score": its score, "on_edge": bool, "table": [{"value", "score"}]
    sorted by value}. on_edge is True when the best is still the smallest or largest value
    tried (then a warning is logged): the optimum may lie beyond it.
    """
    values = sorted(float(v) for v in grid)
    if not values:
        raise ConfigError(f"tune_scalar: the grid of '{name}' is empty")
    if any(not (math.isfinite(v) and v > 0) for v in values):
        raise ConfigError(f"tune_scalar: the grid of '{name}' must hold finite positive values, got {list(grid)}")
    if factor is None:
        ratios = [b / a for a, b in zip(values, values[1:]) if b > a]
        factor = max(ratios) if ratios else 2.0
    if not factor > 1:
        raise ConfigError(f"tune_scalar: factor of '{name}' must be > 1, got {factor}")
    scores: dict[float, float] = {}
    order: list[float] = []

    def score(value: float) -> None:
        if value not in scores:
            s = float(score_fn(value))
            scores[value] = s if math.isfinite(s) else -math.inf
            order.append(value)

    def best() -> float:
        return max(order, key=lambda v: scores[v])  # max keeps the first scored of equal scores

    for v in values:
        score(v)
    for _ in range(max_extend):
        b, tried = best(), sorted(scores)
        if b == tried[0] and b / factor > lower:
            score(b / factor)
        elif b == tried[-1] and b * factor < upper:
            score(b * factor)
        else:
            break
    for _ in range(refine):
        b, tried = best(), sorted(scores)
        i = tried.index(b)
        for j in (i - 1, i + 1):
            if 0 <= j < len(tried):
                score(math.sqrt(b * tried[j]))
    if zero and best() == min(scores):
        score(0.0)
    b, tried = best(), sorted(scores)
    on_edge = len(tried) > 1 and b in (tried[0], tried[-1]) and b != 0.0
    if on_edge:
        log.warning("tuning '%s': the best value %g is on the edge of the values tried (%g..%g); "
                    "the optimum may lie beyond it", name, b, tried[0], tried[-1])
    return {"best": b, "score": scores[b], "on_edge": bool(on_edge),
            "table": [{"value": v, "score": scores[v]} for v in tried]}


def best_prefix(histories: Sequence[Sequence[float]]) -> tuple[int, float]:
    """Iteration count (1-based) that maximises the mean of per-run score histories, and that mean.

    histories[r][k] is run r's score after k + 1 iterations; runs that stopped early (e.g.
    diverged) keep their last score for the missing iterations. Used to choose an early-stopping
    count from one long run per setting.
    """
    if not histories or not all(len(h) for h in histories):
        raise ConfigError("best_prefix: every run needs at least one scored iteration")
    n = max(len(h) for h in histories)
    padded = np.array([list(h) + [h[-1]] * (n - len(h)) for h in histories], float)
    mean = np.nan_to_num(padded.mean(axis=0), nan=-np.inf)
    k = int(np.argmax(mean))
    return k + 1, float(mean[k])
