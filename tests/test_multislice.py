"""The torch multislice model against abTEM 1.0.11 (built directly here), and Eq. (2)/(5)."""

import abtem
import ase
import ase.build
import numpy as np
import pytest
import torch
from abtem.atoms import orthogonalize_cell
from abtem.core.energy import energy2sigma, energy2wavelength

from physdiff.errors import InputError
from physdiff.physics import probe as probe_module
from physdiff.physics.multislice import CPU_SCAN_BATCH, MultisliceGeometry, MultisliceModel
from physdiff.physics.stem_loss import data_loss, loss_and_grad, physics_step, prox_sparsity

ENERGY, SEMIANGLE, DEFOCUS = 200e3, 20.0, 30.0


def cubic_copt3():
    a = 3.85
    cell = ase.Atoms("CoPt3", scaled_positions=[(0, 0, 0), (.5, .5, 0), (.5, 0, .5), (0, .5, .5)],
                     cell=[a, a, a], pbc=True)
    return cell * (2, 2, 2)


def hexagonal_co():
    hcp = orthogonalize_cell(ase.build.bulk("Co", "hcp", a=2.507, c=4.07))
    return hcp * (3, 2, 2)  # 7.5 x 8.7 x 8.1 Å: anisotropic sampling on a 64 x 64 grid


def abtem_reference(atoms, max_angle, scan_gpts=(4, 3)):
    """abTEM's Probe.scan with PixelatedDetector and a bright-field AnnularDetector."""
    with abtem.config.set({"dask.lazy": False, "diagnostics.progress_bar": False}):
        potential = abtem.Potential(atoms, gpts=64, slice_thickness=2.0)
        built = potential.build()
        probe = abtem.Probe(energy=ENERGY, semiangle_cutoff=SEMIANGLE, defocus=DEFOCUS)
        probe.grid.match(potential)
        scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, gpts=scan_gpts,
                              potential=potential)
        detectors = [abtem.PixelatedDetector(max_angle=max_angle),
                     abtem.AnnularDetector(inner=0, outer=SEMIANGLE)]
        patterns, bright = probe.scan(built, scan=scan, detectors=detectors)
    geometry = MultisliceGeometry(
        energy=ENERGY, semiangle=SEMIANGLE, defocus=DEFOCUS, sampling=built.sampling,
        gpts=built.gpts, slice_thickness=built.slice_thickness, sigma=energy2sigma(ENERGY),
        wavelength=energy2wavelength(ENERGY), positions=scan.get_positions(), max_angle=max_angle)
    return built.array, patterns.array, bright.array, geometry


def relative_error(ours, reference):
    return np.linalg.norm(ours - reference) / np.linalg.norm(reference)


@pytest.mark.parametrize("atoms, max_angle", [(cubic_copt3(), "valid"), (cubic_copt3(), "cutoff"),
                                              (hexagonal_co(), "valid"), (hexagonal_co(), "full")],
                         ids=["cubic-valid", "cubic-cutoff", "hexagonal-valid", "hexagonal-full"])
def test_multislice_matches_abtem(atoms, max_angle):
    potential, patterns, bright, geometry = abtem_reference(atoms, max_angle)
    model = MultisliceModel(geometry, device="cpu")
    ours = model.forward(torch.from_numpy(potential), batch_size=5).numpy()
    assert ours.shape == patterns.shape
    assert relative_error(ours, patterns) <= 1e-3
    assert relative_error(model.bright_field(intensities=torch.from_numpy(ours)).numpy(), bright) <= 1e-3
    # the float64 model agrees with float32 abTEM to its precision, not just the tolerance
    model64 = MultisliceModel(geometry, device="cpu", dtype=torch.complex128)
    assert relative_error(model64.forward(torch.from_numpy(potential)).numpy(), patterns) <= 1e-5


def test_bright_field_from_potential_matches_intensity_sum():
    potential, _, bright, geometry = abtem_reference(cubic_copt3(), "valid", scan_gpts=(2, 2))
    model = MultisliceModel(geometry, device="cpu")
    assert relative_error(model.bright_field(torch.from_numpy(potential)).numpy(), bright) <= 1e-3


def test_antialias_aperture_matches_abtem():
    from abtem.antialias import antialias_aperture
    for gpts, sampling in [((64, 64), (0.1, 0.1)), ((48, 60), (0.16, 0.13))]:
        ours = probe_module.antialias_aperture(gpts, sampling).numpy()
        # abTEM evaluates the taper in float32
        np.testing.assert_allclose(ours, antialias_aperture(gpts, sampling, xp=np), atol=1e-5)


def test_probe_matches_abtem_build():
    with abtem.config.set({"precision": "float64"}):
        probe = abtem.Probe(energy=ENERGY, semiangle_cutoff=SEMIANGLE, defocus=DEFOCUS,
                            gpts=(48, 56), extent=(8.0, 9.0))
        reference = probe.build(lazy=False).array
    psi = probe_module.probe_fourier((48, 56), (8 / 48, 9 / 56), energy2wavelength(ENERGY),
                                     SEMIANGLE, DEFOCUS)
    kx, ky = probe_module.spatial_frequencies((48, 56), (8 / 48, 9 / 56))
    # abTEM builds an unscanned probe at the cell centre
    ours = torch.fft.ifft2(psi * torch.exp(-2j * np.pi * (kx * 4.0 + ky * 4.5)))
    assert relative_error(ours.numpy(), reference) <= 1e-10


@pytest.mark.parametrize("gpts", [(64, 64), (63, 64), (96, 81)])
@pytest.mark.parametrize("max_angle", ["valid", "cutoff", "full"])
def test_detector_gpts_match_abtem(gpts, max_angle):
    waves = abtem.Waves(np.ones(gpts, dtype=np.complex64), energy=ENERGY, sampling=(0.11, 0.13))
    # PixelatedDetector asks for the grid's parity
    expected = waves.diffraction_patterns(max_angle=max_angle, parity="same").array.shape
    assert probe_module.detector_gpts(max_angle, gpts, (0.11, 0.13)) == expected


def test_geometry_from_sample_and_bad_input():
    _, _, _, g = abtem_reference(cubic_copt3(), "valid", scan_gpts=(2, 2))
    sample = dict(energy=g.energy, semiangle=g.semiangle, defocus=g.defocus,
                  sampling=np.array(g.sampling), gpts=np.array(g.gpts),
                  slice_thickness=np.array(g.slice_thickness), sigma=g.sigma,
                  wavelength=g.wavelength, positions=g.positions, max_angle="valid",
                  detector_gpts=np.array(g.detector_gpts))
    read = MultisliceGeometry.from_sample({**sample, "positions": g.positions.copy()})
    for field in ("energy", "semiangle", "defocus", "sampling", "gpts", "slice_thickness",
                  "sigma", "wavelength", "max_angle", "detector_gpts"):
        assert getattr(read, field) == getattr(g, field), field
    np.testing.assert_array_equal(read.positions, g.positions)
    with pytest.raises(InputError, match="detector_gpts"):
        MultisliceGeometry.from_sample({**sample, "detector_gpts": np.array([7, 7])})
    with pytest.raises(InputError, match="sigma"):
        MultisliceGeometry.from_sample({k: v for k, v in sample.items() if k != "sigma"})
    with pytest.raises(InputError, match="shape"):
        MultisliceModel(g, device="cpu").forward(torch.zeros(3, 5, 5))


# ---- Eq. (2) and Eq. (5) on a tiny float64 problem -------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    """A 3-slice 24^2 problem simulated with our model from a smooth random potential."""
    g = torch.Generator().manual_seed(0)
    positions = np.stack(np.meshgrid(np.arange(3) * 1.3, np.arange(3) * 1.3, indexing="ij"), -1)
    geometry = MultisliceGeometry(energy=ENERGY, semiangle=25.0, defocus=0.0, sampling=(0.2, 0.2),
                                  gpts=(24, 24), slice_thickness=(1.5, 1.5, 1.5),
                                  sigma=energy2sigma(ENERGY), wavelength=energy2wavelength(ENERGY),
                                  positions=positions, max_angle="cutoff")
    model = MultisliceModel(geometry, device="cpu", dtype=torch.complex128)
    noise = torch.rand(3, 24, 24, generator=g, dtype=torch.float64)
    truth = 300 * torch.fft.ifft2(torch.fft.fft2(noise) * model.antialias**4).real
    return model, truth, model.forward(truth)


def _perturbed(truth: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """The true potential plus seeded noise of 40 V·Å: a point where the gradient is far from zero."""
    return truth + 40 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("form", ["amplitude", "intensity"])
def test_loss_gradient_matches_finite_differences(tiny, form):
    model, truth, intensities = tiny
    v = _perturbed(truth)
    _, grad = loss_and_grad(model, v, intensities, form=form, batch_size=4)
    rng = np.random.default_rng(2)
    h = 1e-3
    for _ in range(6):
        idx = tuple(int(rng.integers(n)) for n in v.shape)
        plus, minus = v.clone(), v.clone()
        plus[idx] += h
        minus[idx] -= h
        numeric = (data_loss(model, plus, intensities, form=form)
                   - data_loss(model, minus, intensities, form=form)) / (2 * h)
        assert abs(numeric - float(grad[idx])) <= 1e-6 * float(grad.abs().max()) + 1e-5 * abs(numeric)


def test_loss_vanishes_at_truth(tiny):
    model, truth, intensities = tiny
    scale = data_loss(model, torch.zeros_like(truth), intensities)
    assert data_loss(model, truth, intensities) < 1e-14 * scale
    assert data_loss(model, truth + 50, intensities) < 1e-14 * scale  # a constant phase is invisible


@pytest.mark.parametrize("line_search", [True, False])
def test_physics_step_decreases_loss(tiny, line_search):
    model, truth, intensities = tiny
    v = _perturbed(truth, seed=3).clamp_min(0)
    before = data_loss(model, v, intensities)
    new, info = physics_step(model, v, intensities, sparsity=1e-9, positivity=True,
                             line_search=line_search)
    assert info["loss"] == pytest.approx(before)
    assert data_loss(model, new, intensities) < before
    assert bool((new >= 0).all())


def test_prox_is_soft_threshold_with_positivity():
    v = torch.tensor([-3.0, -0.5, 0.2, 2.0])
    assert prox_sparsity(v, 1.0, positivity=False).tolist() == [-2.0, 0.0, 0.0, 1.0]
    assert prox_sparsity(v, 1.0, positivity=True).tolist() == [0.0, 0.0, 0.0, 1.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_matches_cpu(tiny):
    model, truth, intensities = tiny
    gpu = MultisliceModel(model.geometry, device="cuda", dtype=torch.complex128)
    np.testing.assert_allclose(gpu.forward(truth).cpu().numpy(), intensities.numpy(), rtol=1e-9, atol=1e-14)


def test_scan_batch_default_explicit_and_bad(tiny):
    model, _, _ = tiny
    assert model.scan_batch() == CPU_SCAN_BATCH  # the CPU default
    assert model.scan_batch(5) == 5
    with pytest.raises(InputError, match="scan batch size"):
        model.scan_batch(0)


@pytest.mark.parametrize("batch", [1, 4, 9, None])
def test_results_do_not_depend_on_the_scan_batch(tiny, batch):
    """Loss, gradient, forward and a physics step agree for any batch (9 = the whole 3 x 3 scan)."""
    model, truth, intensities = tiny
    v = _perturbed(truth)
    loss, grad = loss_and_grad(model, v, intensities, batch_size=batch)
    ref_loss, ref_grad = loss_and_grad(model, v, intensities, batch_size=2)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12 * float(ref_grad.abs().max()))
    torch.testing.assert_close(model.forward(v, batch_size=batch), model.forward(v, batch_size=2),
                               rtol=1e-10, atol=0.0)
    new, _ = physics_step(model, v, intensities, sparsity=1e-9, batch_size=batch)
    ref, _ = physics_step(model, v, intensities, sparsity=1e-9, batch_size=2)
    torch.testing.assert_close(new, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scan_batch_takes_the_whole_scan(tiny):
    model, truth, intensities = tiny
    gpu = MultisliceModel(model.geometry, device="cuda", dtype=torch.complex128)
    assert gpu.scan_batch() == 9  # a 3 x 3 scan of 24^2 waves fits any GPU
    v = _perturbed(truth)
    loss, grad = loss_and_grad(gpu, v, intensities)
    ref_loss, ref_grad = loss_and_grad(model, v, intensities)
    assert loss == pytest.approx(ref_loss, rel=1e-9)
    torch.testing.assert_close(grad.cpu(), ref_grad, rtol=1e-8, atol=1e-10 * float(ref_grad.abs().max()))
