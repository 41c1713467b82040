"""Memory per device of a partition model (physdiff.models.memory), each measured in a fresh process."""

import numpy as np
import pytest

from physdiff.errors import ConfigError, InputError
from physdiff.models.memory import measure, measure_in_subprocess
from physdiff.models.train import save_model, train_prior


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    cfg = {"dim": 16, "dim_mults": [1, 2], "attn_resolutions": [], "temporal_attn_resolutions": [16],
           "image_size": 32}
    data = np.random.default_rng(0).random((4, 4, 32, 32), np.float32)
    path = tmp_path_factory.mktemp("memory") / "model.pt"
    save_model(path, train_prior(data, model_cfg=cfg, steps=1, batch_size=2, grad_accum=1, progress=False))
    return path


def test_a_training_step_needs_memory_in_proportion_to_the_slices(model_path):
    by_slices = {s: measure_in_subprocess(model_path, slices=s, batch=4, stage="train", device="cpu")
                 for s in (4, 8, 16)}
    full, mb = by_slices[16], {s: r["total_mb"] for s, r in by_slices.items()}
    assert full["device"] == "cpu"
    # activations scale with the slices, so doubling them adds twice what the last doubling added;
    # parameters, Adam state and the workspace of the kernels do not. That fixed part depends on
    # the machine and the torch build (about 80 MB here, 140 MB with torch 2.11's CUDA build on
    # an H200 host), so a bound on the ratio of totals would test the machine, not the model.
    assert mb[16] - mb[8] > 20
    assert 1.7 < (mb[16] - mb[8]) / (mb[8] - mb[4]) < 2.3
    # a sampling forward keeps no activations for a backward pass
    sample = measure_in_subprocess(model_path, slices=16, batch=4, stage="sample", device="cpu")
    assert sample["total_mb"] < 0.6 * full["total_mb"]
    assert sample["params_mb"] == pytest.approx(full["params_mb"]) and full["params_mb"] > 0


def test_bad_inputs_name_the_problem(model_path, tmp_path):
    with pytest.raises(ConfigError, match="stage"):
        measure(str(model_path), slices=4, batch=1, stage="infer")
    with pytest.raises(ConfigError, match="slices"):
        measure(str(model_path), slices=0, batch=1, stage="sample")
    with pytest.raises(InputError, match="missing.pt"):
        measure_in_subprocess(tmp_path / "missing.pt", slices=4, batch=1, stage="sample")
