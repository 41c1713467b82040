"""The three 4D-STEM baselines on a tiny CoPt3 case simulated from an abTEM potential."""

import abtem
import ase
import numpy as np
import pytest
import torch
from abtem.core.energy import energy2sigma, energy2wavelength
from skimage.metrics import structural_similarity

from physdiff.errors import InputError
from physdiff.physics.multislice import MultisliceGeometry, MultisliceModel
from physdiff.physics.stem_loss import data_loss, loss_and_grad, physics_step
from physdiff.recon.stem_baselines import sparse_decomposition, three_pie, torchslice


@pytest.fixture(scope="module")
def copt3():
    """CoPt3 2x2x1 cells, 48^2 grid, 2 slices of 1.925 Å, 12x12 scan at 0.64 Å, 200 kV, 20 mrad."""
    a = 3.85
    atoms = ase.Atoms("CoPt3", scaled_positions=[(0, 0, 0), (.5, .5, 0), (.5, 0, .5), (0, .5, .5)],
                      cell=[a, a, a], pbc=True) * (2, 2, 1)
    with abtem.config.set({"dask.lazy": False}):
        potential = abtem.Potential(atoms, gpts=48, slice_thickness=1.925)
        built = potential.build()
        scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, gpts=(12, 12),
                              potential=potential)
        positions = scan.get_positions()
    geometry = MultisliceGeometry(
        energy=200e3, semiangle=20.0, defocus=0.0, sampling=built.sampling, gpts=built.gpts,
        slice_thickness=built.slice_thickness, sigma=energy2sigma(200e3),
        wavelength=energy2wavelength(200e3), positions=positions, max_angle="valid")
    truth = torch.from_numpy(built.array.astype(np.float32))
    model = MultisliceModel(geometry, device="cpu")
    return geometry, truth, model.forward(truth), model


def projection_ssim(potential, truth):
    """SSIM of the phase projection sum_s sigma V_s, data_range from the ground truth."""
    ours, reference = potential.numpy().sum(0), truth.numpy().sum(0)
    return structural_similarity(ours, reference, data_range=float(reference.max() - reference.min()))


def test_three_pie_improves_ssim(copt3):
    geometry, truth, intensities, model = copt3
    start = projection_ssim(torch.zeros_like(truth), truth)
    potential, info = three_pie(intensities, geometry, n_iter=8, model=model, num_threads=1,
                                progress=False)
    assert potential.shape == truth.shape and not info["diverged"]
    assert info["iterations"] == 8 and len(info["loss_history"]) == 9
    assert info["final_loss"] < 0.1 * info["loss_history"][0]
    assert projection_ssim(potential, truth) > start + 0.4


def test_torchslice_improves_ssim(copt3):
    geometry, truth, intensities, model = copt3
    start = projection_ssim(torch.zeros_like(truth), truth)
    potential, info = torchslice(intensities, geometry, n_iter=10, lr=5.0, model=model, num_threads=1,
                                 progress=False)
    assert not info["diverged"] and info["final_loss"] < info["loss_history"][0]
    assert projection_ssim(potential, truth) > start + 0.3


def test_sparse_decomposition_decreases_loss(copt3):
    geometry, truth, intensities, model = copt3
    potential, info = sparse_decomposition(intensities, geometry, n_iter=3, sparsity=1e-6,
                                           model=model, num_threads=1, progress=False)
    history = info["loss_history"]
    assert not info["diverged"] and all(b <= a for a, b in zip(history, history[1:]))
    assert history[-1] < 0.9 * history[0]
    assert bool((potential >= 0).all())


@pytest.mark.parametrize("method, kwargs", [
    (three_pie, {"step_object": 1e6}),
    (torchslice, {"lr": float("inf")}),
    (sparse_decomposition, {"eta": float("inf"), "line_search": False}),
], ids=["3pie", "torchslice", "sparse"])
def test_divergence_is_reported_not_raised(copt3, method, kwargs):
    geometry, truth, intensities, model = copt3
    potential, info = method(intensities, geometry, n_iter=4, model=model, num_threads=1,
                             progress=False, **kwargs)
    assert info["diverged"]
    assert info["iterations"] < 4 or not np.isfinite(info["loss_history"][-1]) \
        or info["loss_history"][-1] > 10 * info["loss_history"][0]
    assert bool(torch.isfinite(potential).all()) and potential.shape == truth.shape


def test_bad_intensities_raise_input_error(copt3):
    geometry, truth, intensities, model = copt3
    kwargs = dict(n_iter=1, model=model, num_threads=1, progress=False)
    with pytest.raises(InputError, match="shape"):
        torchslice(intensities[:, :, :5], geometry, **kwargs)
    with pytest.raises(InputError, match="NaN"):
        torchslice(intensities * np.nan, geometry, **kwargs)


def test_layerwise_secant_step_uses_the_masked_gradient(copt3):
    # physics_step with a per-slice mask must estimate 1/L from the masked direction and the
    # masked gradient change; mixing in the other slices' full gradient made layer-wise steps tiny.
    geometry, truth, intensities, model = copt3
    v = 0.3 * truth
    mask = torch.zeros((geometry.n_slices, 1, 1))
    mask[0] = 1
    _, info = physics_step(model, v, intensities, mask=mask, line_search=False)
    _, grad = loss_and_grad(model, v, intensities)
    g = grad * mask
    d = -g / (g.pow(2).sum() / mask.expand_as(v).sum()).sqrt()
    _, grad2 = loss_and_grad(model, v + d, intensities)
    expected = float(d.norm() / ((grad2 * mask - g).norm()))
    assert info["eta"] == pytest.approx(expected, rel=1e-3)


def test_three_pie_reports_the_loss_of_the_returned_potential(copt3):
    geometry, truth, intensities, model = copt3
    potential, info = three_pie(intensities, geometry, n_iter=2, model=model, num_threads=1, progress=False)
    assert info["final_loss"] == pytest.approx(data_loss(model, potential, intensities), rel=1e-4)


def test_torchslice_defaults_can_reach_the_true_peaks(copt3):
    # Adam moves a voxel by about lr per step: the default budget must reach the true peaks.
    geometry, truth, intensities, model = copt3
    potential, info = torchslice(intensities, geometry, model=model, num_threads=1, progress=False)
    assert info["iterations"] == 30
    assert float(potential.max()) > 0.3 * float(truth.max())


def test_sparse_decomposition_default_sparsity_is_active(copt3):
    geometry, truth, intensities, model = copt3
    kwargs = dict(n_iter=2, model=model, num_threads=1, progress=False, gauge="none")
    sparse, _ = sparse_decomposition(intensities, geometry, **kwargs)
    plain, _ = sparse_decomposition(intensities, geometry, sparsity=0.0, **kwargs)
    assert float((sparse == 0).float().mean()) > float((plain == 0).float().mean())


@pytest.mark.parametrize("method, kwargs", [
    (three_pie, {"n_iter": 2}),
    (torchslice, {"n_iter": 3}),
    (sparse_decomposition, {"n_iter": 1}),
], ids=["3pie", "torchslice", "sparse"])
def test_explicit_zero_start_equals_default_and_truth_start_helps(copt3, method, kwargs):
    geometry, truth, intensities, model = copt3
    kwargs = dict(kwargs, model=model, num_threads=1, progress=False)
    default, _ = method(intensities, geometry, **kwargs)
    explicit, _ = method(intensities, geometry, v0=np.zeros(truth.shape, np.float32), **kwargs)
    torch.testing.assert_close(default, explicit)
    from_truth, _ = method(intensities, geometry, v0=truth, **kwargs)
    assert projection_ssim(from_truth, truth) > projection_ssim(default, truth)
    with pytest.raises(InputError, match="v0"):
        method(intensities, geometry, v0=truth[:1], **kwargs)


@pytest.mark.parametrize("sparsity", [0.0, 1e-6])
def test_layerwise_sweep_takes_the_masked_physics_steps(copt3, sparsity):
    # 4 thinner slices, so the kept waves enter slices 1-3 through earlier, already updated ones
    import dataclasses

    from physdiff.physics.stem_loss import layerwise_sweep

    geometry, truth, _, _ = copt3
    geometry = dataclasses.replace(geometry, slice_thickness=(geometry.slice_thickness[0] / 2,) * 4)
    model = MultisliceModel(geometry, device="cpu", dtype=torch.complex128)
    truth4 = truth.double().repeat_interleave(2, dim=0) / 2
    intensities = model.forward(truth4)
    ref, ours = torch.zeros_like(truth4), torch.zeros_like(truth4)
    ref_steps, our_steps = [None] * 4, [None] * 4
    for _ in range(2):  # the second sweep starts from the first one's warm steps
        infos = []
        for b in range(4):
            mask = torch.zeros((4, 1, 1), dtype=ref.dtype)
            mask[b] = 1
            ref, info = physics_step(model, ref, intensities, eta=ref_steps[b], sparsity=sparsity, mask=mask)
            infos.append(info)
        ref_steps = [2 * i["eta"] for i in infos]
        ours, our_infos = layerwise_sweep(model, ours, intensities, etas=our_steps, sparsity=sparsity)
        our_steps = [2 * i["eta"] for i in our_infos]
        for a, b in zip(infos, our_infos):
            assert a["backtracks"] == b["backtracks"]
            np.testing.assert_allclose([b["loss"], b["loss_new"], b["eta"]], [a["loss"], a["loss_new"], a["eta"]],
                                       rtol=1e-9)
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    assert data_loss(model, ours, intensities) < 0.5 * data_loss(model, torch.zeros_like(truth4), intensities)


def test_three_pie_wave_step_carries_the_update_to_the_entrance_slice(copt3):
    # the wave step scales the exit-wave change passed back to slice s - 1: tied to a small object
    # step it starves the entrance slice, which is why the tuning varies the object step alone
    geometry, truth, intensities, model = copt3
    entrance = {}
    for wave in (0.2, 1.0):
        potential, _ = three_pie(intensities, geometry, n_iter=4, step_object=0.2, step_wave=wave, model=model,
                                 num_threads=1, progress=False)
        entrance[wave] = float(potential[0].max() / truth[0].max())
    assert entrance[1.0] > 2 * entrance[0.2]


def test_tuned_three_pie_sets_the_object_step_and_keeps_the_wave_step():
    from physdiff.recon.run import stem_params

    params = stem_params("three_pie", {"n_iter": 20, "step_object": 1.0, "step_wave": 1.0},
                         {"value": 0.3, "n_iter": 12})
    assert params == {"n_iter": 12, "step_object": 0.3, "step_wave": 1.0}


def test_three_pie_does_not_take_the_phase_of_rounding_noise(copt3):
    """Where the modelled far field is zero (the dark field of the flat start) its phase is rounding
    noise; 3PIE's modulus constraint must not impose it, or results differ between complex64 and
    complex128 (and between CPU and CUDA) by far more than float32 rounding."""
    geometry, truth, intensities, _ = copt3
    runs = [three_pie(intensities, geometry, n_iter=10, step_object=0.05, dtype=dtype, progress=False)[0]
            for dtype in (torch.complex64, torch.complex128)]
    assert float((runs[0] - runs[1]).abs().max() / runs[1].abs().max()) < 1e-3
