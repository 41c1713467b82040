"""Per-scan adaptation of the prior (low-rank adapters fitted to the measurement) and the
noised data consistency on x_{t-1}."""

import hashlib

import numpy as np
import pytest
import torch

from physdiff.data.masks import holdout_lines
from physdiff.data.phantoms import blob_volume
from physdiff.errors import ConfigError
from physdiff.models.diffusion import GaussianDiffusion, to_network
from physdiff.models.lora import add_adapters, adapter_targets, base_weights
from physdiff.models.unet import build_unet
from physdiff.physics.mri import fft2c, simulate_kspace
from physdiff.recon.adapt import AdaptSettings, Fitter
from physdiff.recon.dart import dart
from physdiff.recon.problems import MRIProblem

TINY = {"dim": 8, "dim_mults": [1, 2], "attn_resolutions": [8], "temporal_attn_resolutions": [8], "image_size": 16}


def tiny_models(n=2, padding="zeros", seed=0, size=16):
    torch.manual_seed(seed)
    models = [build_unet({**TINY, "padding": padding, "image_size": size}) for _ in range(n)]
    for m in models:  # the zero-initialised output layers would make every model the same
        for p in m.parameters():
            p.data.normal_(0.0, 0.05)
        m.eval()
    return models


def checksum(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(base_weights(model).items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def case():
    truth = blob_volume(4, 16, seed=1)
    mask = np.zeros((16, 16), bool)
    mask[:, ::3] = True
    mask[:, 6:10] = True
    return truth, mask, simulate_kspace(truth, mask)


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("shared", [False, True])
def test_adapters_start_as_the_identity(padding, shared):
    models = tiny_models(padding=padding)
    adapted, params = add_adapters(models, rank=2, alpha=2.0, shared=shared)
    x, t = torch.randn(1, 1, 4, 16, 16), torch.tensor([500])
    for plain, ad in zip(models, adapted):
        assert torch.equal(plain(x, t), ad(x, t))
    # every 3x3 convolution (periodic ones included) and attention projection has one
    n_layers = len(adapter_targets(models[0]))
    assert n_layers >= 10
    assert len(params) == 2 * n_layers * (1 if shared else len(models))


def test_adapters_change_the_eps_once_moved_and_cover_the_periodic_and_last_convolutions():
    models = tiny_models(padding="circular")
    adapted, params = add_adapters(models[:1], rank=2)
    x, t = torch.randn(1, 1, 4, 16, 16), torch.tensor([300])
    with torch.no_grad():
        for p in params:
            p.add_(0.1)
    assert not torch.allclose(models[0](x, t), adapted[0](x, t))
    names = [n for n, _ in adapter_targets(models[0])]
    assert any("qkv" in n for n in names) and any(n.endswith(".out") for n in names)


def test_fitting_lowers_the_data_consistency_loss_and_leaves_the_base_weights(case):
    truth, mask, y = case
    problem = MRIProblem(y, mask)
    models = tiny_models()
    before = [checksum(m) for m in models]
    settings = AdaptSettings(rank=4, alpha=4.0, lr=3e-2, iters=1)
    adapted, params = add_adapters(models, rank=4, alpha=4.0)
    fitter = Fitter(adapted, params, problem, settings, seam="none")
    gen = torch.Generator().manual_seed(0)
    x = GaussianDiffusion().q_sample(to_network(torch.as_tensor(truth))[None, None], torch.tensor([200]),
                                     torch.randn(1, 1, 4, 16, 16, generator=gen))
    losses = []
    for _ in range(12):
        fitter(x, 200)
        losses.append(fitter.log[-1]["fit_loss"])
    assert losses[-1] < 0.85 * losses[0] and losses[-1] == min(losses)
    assert [checksum(m) for m in models] == before
    assert [checksum(m) for m in adapted] == before  # the copies' own weights did not move either
    assert all(p.grad is None for m in models for p in m.parameters())


def test_held_out_lines_never_enter_the_first_pass(case):
    """Changing the measurement on the held-out lines changes nothing the first pass fits to."""
    truth, mask, y = case
    problem = MRIProblem(y, mask)
    kept, held = problem.split_lines(0.3, seed=5)
    assert held.any() and not (kept.mask & held).any()
    assert np.all(kept.y[np.broadcast_to(held, kept.y.shape)] == 0)
    y_other = y.copy()
    y_other[np.broadcast_to(held, y.shape)] *= -3.0
    kept_other, held_other = MRIProblem(y_other, mask).split_lines(0.3, seed=5)
    np.testing.assert_array_equal(held, held_other)
    np.testing.assert_array_equal(kept.y, kept_other.y)

    def first_pass(p_kept):
        settings = AdaptSettings(rank=2, lr=1e-2)
        adapted, params = add_adapters(tiny_models(), rank=2)
        fitter = Fitter(adapted, params, p_kept, settings, seam="none")
        x = torch.randn(1, 1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
        for t in (800, 600, 400):
            fitter(x, t)
        return torch.cat([p.detach().flatten() for p in params])

    assert torch.equal(first_pass(kept), first_pass(kept_other))


def test_holdout_split_keeps_the_centre_band_and_follows_holdout_lines(case):
    _, mask, y = case
    problem = MRIProblem(y, mask)
    assert problem.centre_fraction() == pytest.approx(4 / 16)
    kept, held = problem.split_lines(0.3, seed=2)
    ref_kept, ref_held = holdout_lines(np.broadcast_to(mask, y.shape), 0.3, center_fraction=4 / 16, seed=2)
    np.testing.assert_array_equal(held, ref_held)
    np.testing.assert_array_equal(kept.mask, ref_kept)
    assert not held[:, :, 6:10].any()


def test_dart_with_adaptation_runs_two_passes_and_never_changes_the_models(case):
    truth, mask, y = case
    problem = MRIProblem(y, mask)
    models = tiny_models()
    before = [checksum(m) for m in models]
    plain = dart(models, problem, steps=5, eta=0.0, progress=False)
    adapted = dart(models, problem, steps=5, eta=0.0, progress=False, adapt={"rank": 2, "lr": 1e-2, "t_max": 1.0})
    assert [checksum(m) for m in models] == before
    info = adapted.adapt
    assert info["fits_first_pass"] == 5 and 0 <= info["stop"] < 5
    assert len(info["heldout"]) == 5 and len(info["fit"]) == info["stop"]
    # the first held-out row is before any fit: adapted and plain agree there
    assert info["heldout"][0]["heldout_adapted"] == pytest.approx(info["heldout"][0]["heldout_plain"])
    # the plain run afterwards is unchanged by the adapted one
    again = dart(models, problem, steps=5, eta=0.0, progress=False)
    np.testing.assert_array_equal(plain.volume, again.volume)
    # the last physics step puts the measured lines back, as in plain DART
    k = fft2c(problem.last_complex)
    np.testing.assert_allclose(k[:, mask], y[:, mask], atol=1e-5)


@pytest.mark.parametrize("bad, key", [
    ({"rank": 0}, "rank"), ({"rank": 1.5}, "rank"), ({"lr": 0.0}, "lr"), ({"lr": -1e-3}, "lr"),
    ({"holdout": 0.0}, "holdout"), ({"holdout": 0.5}, "holdout"), ({"holdout": 0.7}, "holdout"),
    ({"iters": 0}, "iters"), ({"alpha": 0}, "alpha"), ({"t_max": 0}, "t_max"), ({"nope": 1}, "nope"),
])
def test_bad_adaptation_settings_stop_naming_the_key(case, bad, key):
    _, mask, y = case
    with pytest.raises(ConfigError, match=key):
        dart(tiny_models(), MRIProblem(y, mask), steps=2, progress=False, adapt=bad)


def test_noised_consistency_puts_the_measurement_at_the_noise_level_on_the_measured_lines(case):
    truth = case[0]
    mask = np.zeros((16, 16), bool)
    mask[:, [3, 6, 7, 8, 9, 10, 13]] = True  # symmetric about k = 0 (index 8): the real part keeps the lines
    problem = MRIProblem(simulate_kspace(truth, mask), mask)
    x_net = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(0))
    z = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(1))
    abar = 0.36
    out = problem.noised_consistency(x_net, abar, z)
    k_target = np.sqrt(abar) * fft2c(2 * truth.astype(np.complex64) - 1) + np.sqrt(1 - abar) * fft2c(z.numpy())
    k_out, k_in = fft2c(out.numpy().astype(np.complex64)), fft2c(x_net.numpy().astype(np.complex64))
    np.testing.assert_allclose(k_out[:, mask], k_target[:, mask], atol=1e-4)
    np.testing.assert_allclose(k_out[:, ~mask], k_in[:, ~mask], atol=1e-4)  # the rest is x_{t-1}'s own
    # at abar = 1 (t = -1) a volume that fits the measurement is left as it is
    clean = to_network(torch.as_tensor(truth))
    np.testing.assert_allclose(problem.noised_consistency(clean, 1.0, z).numpy(), clean.numpy(), atol=1e-4)


def test_dart_xt_noised_recovers_the_volume_with_an_oracle_prior(case):
    from test_dart_drift import oracle_models

    truth, mask, y = case
    out = dart(oracle_models(truth, 2), MRIProblem(y, mask), steps=10, correction="xt_noised", progress=False)
    assert np.abs(out.volume - truth).max() < 0.02


def test_heldout_check_weights_rarely_sampled_lines_up_under_density_weighting():
    from physdiff.data.masks import make_mask
    from physdiff.recon.select import choose, heldout_error, line_density

    per_slice = make_mask("gaussian", shape=(32, 32), acceleration=2, center_fraction=0.08, seed=0, n_slices=16)
    density = line_density(per_slice)
    assert density.shape == (32,) and density[16] > 2 * density[2] and density.min() >= 1 / 32
    mask = np.broadcast_to(make_mask("gaussian", shape=(32, 32), acceleration=2, center_fraction=0.08, seed=1),
                           (4, 32, 32))
    truth = blob_volume(4, 32, seed=0)
    y = fft2c(truth.astype(np.complex64)) * mask
    held = np.zeros_like(mask)
    lines = [k for k in range(32) if mask[:, :, k].any()]
    low = min(lines, key=lambda k: abs(k - 16) if abs(k - 16) > 2 else 99)  # a held line near the centre
    high = max([k for k in lines if k > 0], key=lambda k: abs(k - 16))  # the outermost sampled line (not Nyquist)
    held[:, :, [low, high]] = mask[:, :, [low, high]]
    k = fft2c(truth.astype(np.complex64))

    def off_on(line):  # the truth with an error of equal energy on one held-out line (and its mirror: x is real)
        err = np.zeros_like(k)
        err[:, :, [line, 32 - line]] = 0.05 * np.abs(k).max()
        return np.real(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k + err, axes=(-2, -1)), norm="ortho"),
                                       axes=(-2, -1))).astype(np.float32)

    a, b = off_on(low), off_on(high)
    plain = {m: heldout_error(x, y, held) for m, x in (("a", a), ("b", b))}
    dens = {m: heldout_error(x, y, held, weighting="density", mask=mask) for m, x in (("a", a), ("b", b))}
    assert plain["a"] == pytest.approx(plain["b"], rel=0.02)
    assert dens["b"] > 1.5 * dens["a"]  # the rarely sampled line counts for the unmeasured ones near it
    assert choose(dens) == "a" and choose({"dart": 1.0, "cs_l1_wavelet": 1.0}) == "dart"
    assert choose({"dart": float("nan"), "cs_l1_wavelet": 2.0}) == "cs_l1_wavelet"
    with pytest.raises(ConfigError, match="weighting"):
        heldout_error(a, y, held, weighting="sure")


def test_adapt_benchmark_smoke_runs_both_and_prints_the_ratio():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks/adapt.py"), "--smoke"], capture_output=True,
                         text=True, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr
    assert "volume 0: plain" in out.stdout and "stop after" in out.stdout
    assert "mean time ratio adapted / plain:" in out.stdout


def test_fits_are_made_only_at_steps_at_or_below_t_max(case):
    truth, mask, y = case
    out = dart(tiny_models(), MRIProblem(y, mask), steps=5, eta=0.0, progress=False, adapt={"rank": 2, "t_max": 0.5})
    ts = [row["t"] for row in out.adapt["heldout"]]
    assert ts and all(t <= 500 for t in ts) and out.adapt["fits_first_pass"] == len(ts) < 5


# --- 4D-STEM: held-out scan positions, the relative amplitude loss -------------------------------

from physdiff.data.transforms import PowerTransform  # noqa: E402
from physdiff.recon.problems import STEMProblem  # noqa: E402
from test_stem_baselines import copt3  # noqa: E402,F401  (the tiny abTEM CoPt3 case, a fixture)


def test_stem_fit_loss_is_the_relative_amplitude_loss_and_its_gradient(copt3):  # noqa: F811
    geometry, truth, intensities, model = copt3
    problem = STEMProblem(intensities, geometry, PowerTransform(float(truth.max())), device="cpu")
    v = (0.6 * truth).clone().requires_grad_(True)
    loss = problem.fit_loss(v)
    loss.backward()
    norm = float(intensities.clamp_min(0).sum())
    assert float(loss) == pytest.approx(problem.loss(v.detach()) / norm, rel=1e-5)
    # the same loss through autograd over the whole scan at once
    w = (0.6 * truth).clone().requires_grad_(True)
    predicted = model.forward(w)
    direct = ((torch.sqrt(predicted + 1e-20) - intensities.clamp_min(0).sqrt()) ** 2).sum() / norm
    direct.backward()
    assert float(direct) == pytest.approx(float(loss), rel=1e-4)
    torch.testing.assert_close(v.grad, w.grad, rtol=1e-3, atol=1e-3 * float(w.grad.abs().max()))


def test_held_out_scan_positions_never_enter_the_first_pass(copt3):  # noqa: F811
    geometry, truth, intensities, _ = copt3
    transform = PowerTransform(float(truth.max()))
    problem = STEMProblem(intensities, geometry, transform, device="cpu")
    kept, held = problem.split_measurement(0.25, seed=3)
    assert held.shape == geometry.scan_shape and held.sum() == round(0.25 * held.size)
    assert kept.geometry.positions.shape == (1, int((~held).sum()), 2)
    other = intensities.clone()
    other[torch.as_tensor(held)] *= 3.0
    kept_other, held_other = STEMProblem(other, geometry, transform, device="cpu").split_measurement(0.25, seed=3)
    np.testing.assert_array_equal(held, held_other)
    v = 0.5 * truth
    assert float(kept.fit_loss(v)) == float(kept_other.fit_loss(v))
    # the held-out positions score the truth as exact and a wrong potential as not
    exact, wrong = problem.heldout_error(truth, held), problem.heldout_error(0.5 * truth, held)
    assert exact < 1e-6 and wrong > 1e-3 and wrong > 1000 * exact


def test_dart_with_adaptation_runs_on_a_stem_problem_and_never_changes_the_models(copt3):  # noqa: F811
    geometry, truth, intensities, _ = copt3
    problem = STEMProblem(intensities, geometry, PowerTransform(float(truth.max()) * 1.05, gamma=0.5), device="cpu")
    models = tiny_models(padding="circular", size=48)
    before = [checksum(m) for m in models]
    result = dart(models, problem, steps=3, progress=False, adapt={"rank": 2, "lr": 1e-2, "t_max": 1.0})
    assert [checksum(m) for m in models] == before
    assert result.volume.shape == tuple(truth.shape) and np.isfinite(result.volume).all()
    info = result.adapt
    assert info["fits_first_pass"] == 3 and 0 <= info["stop"] < 3 and info["held"].shape == geometry.scan_shape
