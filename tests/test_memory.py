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


def test_a_training_step_on_half_the_slices_needs_about_half_the_memory(model_path):
    full = measure_in_subprocess(model_path, slices=16, batch=4, stage="train", device="cpu")
    half = measure_in_subprocess(model_path, slices=8, batch=4, stage="train", device="cpu")
    assert full["device"] == "cpu"
    # activations dominate and scale with the slices; parameters and Adam state do not
    assert full["growth_mb"] > 20
    assert 0.35 < half["total_mb"] / full["total_mb"] < 0.65
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
