"""benchmarks/py4dstem_check.py: export to py4DSTEM's conventions and scoring, with a stand-in worker.

The stand-in runs in this venv and hands back the start it was given, so export, the round trip
through .npz files, the gauge and the pipeline's scoring are checked without py4DSTEM. The last
test runs py4DSTEM itself where benchmarks/py4dstem_env.sh has made .venv-py4dstem.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from physdiff.metrics.ssim import ssim_phase_projection
from physdiff.physics.multislice import MultisliceGeometry, MultisliceModel
from physdiff.recon import run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "py4dstem_check.py"
PY4DSTEM_PYTHON = ROOT / ".venv-py4dstem" / "bin" / "python"

# hands back the start (phases) it was given, and checks what a worker may rely on
STAND_IN = '''
import json, sys
import numpy as np
inp = dict(np.load(sys.argv[1]))
settings = json.loads(str(inp["settings"]))
assert inp["intensities"].shape[1:] == inp["fourier_mask"].shape == inp["probe"].shape
assert inp["positions"].shape == (inp["intensities"].shape[0], 2)
assert not inp["intensities"][:, ~inp["fourier_mask"]].any()
phases = inp["initial_phases"] + np.arange(len(inp["slice_thickness"]))[:, None, None]  # a constant per slice
out = {"phases": phases, "errors": np.zeros(settings["num_iter"]), "seconds": 0.5}
if settings["store_iterations"]:
    out["phases_iterations"] = np.stack([phases * (k + 1) / settings["num_iter"] for k in range(settings["num_iter"])])
np.savez(sys.argv[2], **out)
'''


def _load_check():
    spec = importlib.util.spec_from_file_location("py4dstem_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def check():
    return _load_check()


@pytest.fixture(scope="module")
def case():
    """A smooth random potential without symmetry on a non-square cell, 3 slices, defocused probe."""
    gpts, sampling = (48, 40), (0.2, 0.23)
    extent = np.array(gpts) * np.array(sampling)
    x, y = np.meshgrid(np.arange(10) * extent[0] / 10, np.arange(9) * extent[1] / 9, indexing="ij")
    geometry = MultisliceGeometry(energy=200e3, semiangle=20.0, defocus=30.0, sampling=sampling, gpts=gpts,
                                  slice_thickness=(2.0, 2.0, 2.0), sigma=7.29e-4, wavelength=0.02508,
                                  positions=np.stack([x, y], -1))
    rng = np.random.default_rng(0)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(gpts[0], sampling[0]), np.fft.fftfreq(gpts[1], sampling[1]),
                              indexing="ij"))
    noise = [np.fft.ifft2(np.fft.fft2(rng.random(gpts)) * (k < 0.8)).real for _ in range(3)]
    truth = 300 * (np.stack(noise) - np.min(noise))
    model = MultisliceModel(geometry, device="cpu", dtype=torch.complex128)
    return geometry, truth, model.forward(torch.as_tensor(truth)).numpy(), model


def test_help_reads_like_a_manual():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    assert "py4DSTEM" in done.stdout and "--step-size" in done.stdout and "detector_fourier_mask" in done.stdout


def test_export_puts_the_patterns_back_on_the_simulation_grid(check, case):
    geometry, truth, intensities, model = case
    out = check.export_sample(intensities, geometry, {"num_iter": 1})
    full, mask = out["intensities"], out["fourier_mask"]
    assert full.shape == (90, *geometry.gpts) and mask.sum() == np.prod(geometry.detector_gpts)
    # reading the full grid with the model's crop gives back the measured patterns
    crop = full[:, model.crop_x.numpy()[:, None], model.crop_y.numpy()[None, :]]
    np.testing.assert_array_equal(crop.reshape(intensities.shape), intensities.astype(np.float32))
    assert not full[:, ~mask].any()
    # the probe carries unit intensity, as in the simulation, and is centred on pixel 0
    assert np.sum(np.abs(np.fft.fft2(out["probe"])) ** 2) == pytest.approx(1.0, rel=1e-5)
    assert np.unravel_index(np.argmax(np.abs(out["probe"])), geometry.gpts) == (0, 0)
    np.testing.assert_allclose(out["extent"], [9.6, 9.2])
    np.testing.assert_array_equal(out["positions"], geometry.positions.reshape(-1, 2))


def test_stand_in_worker_round_trip_is_scored_as_the_pipeline_scores(check, case, tmp_path):
    geometry, truth, intensities, _ = case
    worker = tmp_path / "worker.py"
    worker.write_text(STAND_IN)
    seen = []
    potential, info = check.py4dstem(intensities, geometry, v0=truth, n_iter=4, python=sys.executable,
                                     worker=worker, callback=lambda i, v, loss: seen.append(i))
    # the per-slice constant the stand-in added is gauge, removed as our solvers remove it
    expected = truth - truth.reshape(3, -1).min(1)[:, None, None]
    np.testing.assert_allclose(potential.numpy(), expected, rtol=1e-4, atol=1e-2)
    assert seen == [1, 2, 3, 4] and info["iterations"] == 4 and not info["diverged"]
    assert info["final_loss"] < 1e-6 and info["solver_seconds"] == 0.5

    # through physdiff.recon.run as `reconstruct_baseline_stem` calls it: same row, same score
    check.register(sys.executable)
    method = run.STEM_BASELINES[check.METHOD]
    run.STEM_BASELINES[check.METHOD] = lambda *a, **k: method(*a, worker=worker, v0=truth, **k)
    try:
        sample = {"potential": truth.astype(np.float32), "intensities": intensities, "energy": 200e3,
                  "semiangle": 20.0, "defocus": 30.0, "sampling": np.array(geometry.sampling),
                  "gpts": np.array(geometry.gpts), "slice_thickness": np.array(geometry.slice_thickness),
                  "sigma": geometry.sigma, "wavelength": geometry.wavelength, "positions": geometry.positions,
                  "max_angle": "valid"}
        _, row = run.reconstruct_stem(sample, method=check.METHOD, params={"n_iter": 2, "step_size": 1.0})
    finally:
        run.STEM_BASELINES.pop(check.METHOD)
        run.STEM_TUNED_PARAM.pop(check.METHOD)
    assert row["ssim"] == pytest.approx(ssim_phase_projection(expected, truth, geometry.sigma))
    assert row["method"] == check.METHOD and row["param_step_size"] == 1.0 and row["iterations"] == 2


def test_missing_venv_says_how_to_make_it(check, case, tmp_path):
    geometry, _, intensities, _ = case
    with pytest.raises(Exception, match="py4dstem_env.sh"):
        check.py4dstem(intensities, geometry, n_iter=1, python=tmp_path / "no-python")


@pytest.mark.slow
@pytest.mark.skipif(not PY4DSTEM_PYTHON.exists(),
                    reason=".venv-py4dstem not found: `bash benchmarks/py4dstem_env.sh` makes it (needs pip)")
def test_py4dstem_forward_model_matches_ours(check, case):
    """py4DSTEM's data error vanishes at the true potential and not at a 1-pixel shift or a flip."""
    geometry, truth, intensities, _ = case
    settings = {"num_iter": 1, "step_size": 0.0, "object_type": "potential", "positivity": False}

    def error(v):
        inputs = check.export_sample(intensities, geometry, settings, geometry.sigma * v)
        return float(check.call_worker(inputs, python=PY4DSTEM_PYTHON)["errors"][0])

    at_truth = error(truth)
    assert at_truth < 1e-3 * error(np.zeros_like(truth))
    assert at_truth < 1e-2 * error(np.roll(truth, 1, axis=2))
    assert at_truth < 1e-2 * error(truth[:, ::-1].copy())
