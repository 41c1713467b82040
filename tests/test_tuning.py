"""The generic hyperparameter tuner: it extends past grid edges and refines to an interior choice."""

import logging
import math

import pytest

from physdiff.errors import ConfigError
from physdiff.recon.tuning import best_prefix, tune_scalar


def peaked(at):
    """A smooth score with its maximum at `at`, symmetric in log(value)."""
    return lambda v: -(math.log(v) - math.log(at)) ** 2


def test_optimum_below_the_grid_is_found_by_extension():
    result = tune_scalar(peaked(1e-4), [1e-3, 3e-3, 1e-2, 3e-2], max_extend=4)
    assert not result["on_edge"]
    assert result["best"] == pytest.approx(1e-4, rel=0.8)
    values = [row["value"] for row in result["table"]]
    assert min(values) < result["best"] < max(values)


def test_optimum_above_the_grid_and_inside_it():
    above = tune_scalar(peaked(1.0), [1e-3, 1e-2, 1e-1], max_extend=3)
    assert above["best"] == pytest.approx(1.0, rel=0.5) and not above["on_edge"]
    inside = tune_scalar(peaked(0.004), [1e-3, 3e-3, 1e-2, 3e-2], refine=2)
    # refinement lands closer to the optimum than any grid value
    assert abs(math.log(inside["best"] / 0.004)) < abs(math.log(3e-3 / 0.004))
    assert not inside["on_edge"]


def test_bounded_extension_reports_on_edge_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        result = tune_scalar(peaked(1e-9), [1e-3, 1e-2], max_extend=2, name="lam")
    assert result["on_edge"] and result["best"] == pytest.approx(1e-5)
    assert "lam" in caplog.text and "edge" in caplog.text


def test_zero_bound_is_tried_when_the_smallest_weight_still_wins():
    # a penalty that only hurts: score falls with the weight, so the best weight is 0 itself
    hurts = tune_scalar(lambda v: -v, [1e-3, 1e-2], max_extend=2, zero=True, name="sparsity")
    assert hurts["best"] == 0.0 and not hurts["on_edge"]
    assert hurts["table"][0] == {"value": 0.0, "score": 0.0}
    # an interior optimum is not disturbed, and 0 is never tried for it
    inside = tune_scalar(peaked(3e-3), [1e-3, 3e-3, 1e-2], zero=True)
    assert inside["best"] == pytest.approx(3e-3) and 0.0 not in [r["value"] for r in inside["table"]]
    # 0 is tried but loses when a small positive weight helps; the winner then lies between 0 and the grid
    helps = tune_scalar(lambda v: -abs(math.log10(v + 1e-12) + 4), [1e-3, 1e-2], max_extend=1, zero=True)
    assert helps["best"] == pytest.approx(1e-4) and not helps["on_edge"]
    assert [r["value"] for r in helps["table"]][0] == 0.0


def test_bad_grids_raise_config_error():
    with pytest.raises(ConfigError):
        tune_scalar(peaked(1.0), [])
    with pytest.raises(ConfigError):
        tune_scalar(peaked(1.0), [0.0, 1.0])


def test_nan_scores_never_win_and_best_prefix_picks_the_peak():
    result = tune_scalar(lambda v: float("nan") if v > 0.5 else v, [0.1, 0.2, 1.0], max_extend=0, refine=0)
    assert result["best"] == 0.2
    assert best_prefix([[0.1, 0.5, 0.3], [0.2, 0.4]]) == (2, pytest.approx(0.45))


def test_stem_iteration_cap_is_doubled_while_the_best_count_sits_on_it(monkeypatch):
    import numpy as np
    import torch

    import physdiff.recon.run as run

    truth = np.random.default_rng(0).uniform(0, 50, size=(2, 16, 16)).astype(np.float32)
    calls = []

    def fake_baseline(intensities, geometry, *, n_iter, callback, **kwargs):
        # the reconstruction improves for 30 iterations, then stays put: the best count is 30
        calls.append(n_iter)
        for it in range(n_iter):
            callback(it, torch.from_numpy(truth * min(1.0, (it + 1) / 30)), 0.0)

    monkeypatch.setitem(run.STEM_BASELINES, "torchslice", fake_baseline)
    monkeypatch.setattr(run.MultisliceGeometry, "from_sample", classmethod(lambda cls, s: None))
    sample = {"potential": truth, "sigma": 0.01, "intensities": None}
    found = run.tune_stem_baseline([sample], method="torchslice", grid=[1.0], max_iter=10, max_extend=2)
    assert (found["n_iter"], found["max_iter"], found["n_iter_on_edge"]) == (30, 40, False)
    # every value tried runs to the cap of 10; only the best one is run again, with the cap doubled
    assert set(calls[:-2]) == {10} and calls[-2:] == [20, 40]
    capped = run.tune_stem_baseline([sample], method="torchslice", grid=[1.0], max_iter=10, max_extend=1)
    assert (capped["n_iter"], capped["max_iter"], capped["n_iter_on_edge"]) == (20, 20, True)
