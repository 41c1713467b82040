"""Partitioned reverse diffusion: slab order, hooks, determinism."""

import numpy as np
import pytest
import torch

from physdiff.errors import ConfigError, InputError
from physdiff.models.diffusion import GaussianDiffusion
from physdiff.models.sampling import partition_bounds, reverse_diffusion, sample_volumes
from physdiff.models.unet import build_unet

DIFF = GaussianDiffusion()


class MarkerModel:
    """A stand-in partition model whose eps makes predict_x0 equal its marker value everywhere."""

    def __init__(self, marker: float):
        self.marker, self.slab_shapes = marker, []

    def __call__(self, x, t):
        self.slab_shapes.append(tuple(x.shape))
        return DIFF.eps_from_x0(x, int(t[0]), torch.full_like(x, self.marker))


def test_partition_bounds_cover_all_slices_in_order():
    assert partition_bounds(16, 2) == [(0, 8), (8, 16)]
    assert partition_bounds(7, 3) == [(0, 2), (2, 4), (4, 7)]
    with pytest.raises(ConfigError):
        partition_bounds(4, 5)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_slabs_are_stacked_in_partition_order(sampler):
    markers = [-0.8, 0.0, 0.6]
    models = [MarkerModel(m) for m in markers]
    seen = []
    out = reverse_diffusion(models, (2, 7, 4, 4), sampler=sampler, steps=10, seed=0, progress=False,
                            x0_correction=lambda x0, t: seen.append((x0.clone(), t)) or x0)
    assert out.shape == (2, 7, 4, 4)
    expected = torch.tensor([-0.8] * 2 + [0.0] * 2 + [0.6] * 3)
    assert [m.slab_shapes[0] for m in models] == [(2, 1, 2, 4, 4), (2, 1, 2, 4, 4), (2, 1, 3, 4, 4)]
    # the hook sees the full stacked (B, 1, S, H, W) volume at every step, in order
    assert len(seen) == 10 and [t for _, t in seen] == DIFF.schedule(10)
    for x0, _ in seen:
        assert x0.shape == (2, 1, 7, 4, 4)
        # float32 x0 = (x_t - ...)/sqrt(abar_t) amplifies rounding at t near T; 1e-2 still separates markers
        torch.testing.assert_close(x0[0, 0, :, 0, 0].float().cpu(), expected, atol=1e-2, rtol=0)
    torch.testing.assert_close(out[0, :, 0, 0], (expected + 1) / 2, atol=1e-4, rtol=0)


def test_x0_correction_steers_the_sample_and_xt_hook_runs_between_steps():
    calls = []
    target = lambda x0, t: torch.full_like(x0, 0.5)
    xt_hook = lambda x, t: calls.append(t) or x
    out = reverse_diffusion([MarkerModel(-1.0)] * 2, (1, 4, 4, 4), steps=5, seed=3, progress=False,
                            x0_correction=target, xt_correction=xt_hook)
    torch.testing.assert_close(out, torch.full_like(out, 0.75))  # 0.5 in [-1, 1] is 0.75 in [0, 1]
    assert calls == DIFF.schedule(5)[1:]


def test_sampling_is_reproducible_for_a_seed():
    torch.manual_seed(0)
    models = [build_unet({"dim": 8, "dim_mults": (1, 2), "groups": 4, "head_dim": 4}) for _ in range(2)]
    for m in models:  # give the zero-initialised output layers a voice
        torch.nn.init.normal_(m.final[-1].weight, std=0.1)
    kw = dict(steps=4, eta=1.0, progress=False)
    a = reverse_diffusion(models, (2, 6, 8, 8), seed=11, **kw)
    b = reverse_diffusion(models, (2, 6, 8, 8), seed=11, **kw)
    c = reverse_diffusion(models, (2, 6, 8, 8), seed=12, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_sample_volumes_batches_and_seeds():
    vols = sample_volumes([MarkerModel(0.2)], 5, (3, 4, 4), batch_size=2, steps=3, progress=False)
    assert vols.shape == (5, 3, 4, 4) and vols.dtype == np.float32
    np.testing.assert_allclose(vols, 0.6, atol=1e-4)


def test_bad_sampler_and_devices_are_config_errors():
    with pytest.raises(ConfigError, match="sampler"):
        reverse_diffusion([MarkerModel(0.0)], (1, 2, 4, 4), sampler="euler", progress=False)
    with pytest.raises(ConfigError, match="one device per partition"):
        reverse_diffusion([MarkerModel(0.0)] * 2, (1, 2, 4, 4), devices=["cpu"], progress=False)


class SliceWise:
    """A model whose eps acts on each slice alone, so slabs of any split predict alike."""

    def __call__(self, x, t):
        return 0.3 * torch.tanh(2 * x) + 0.01 * float(t[0]) / 1000


@pytest.mark.parametrize("seam", ["overlap", "plateau"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("G", [2, 3])
def test_overlap_seams_with_slice_wise_models_equal_one_model(sampler, G, seam):
    kw = dict(sampler=sampler, steps=6, seed=4, progress=False)
    one = reverse_diffusion([SliceWise()], (2, 12, 4, 4), **kw)
    many = reverse_diffusion([SliceWise()] * G, (2, 12, 4, 4), seam=seam, **kw)
    torch.testing.assert_close(many, one, atol=1e-5, rtol=0)


def test_overlap_windows_span_the_boundary_at_slab_length():
    from physdiff.models.sampling import seam_windows

    models = [MarkerModel(-0.5), MarkerModel(0.5)]
    reverse_diffusion(models, (1, 8, 4, 4), steps=2, seed=0, progress=False, seam="overlap")
    assert models[0].slab_shapes[:2] == [(1, 1, 4, 4, 4)] * 2  # its slab, then the window [2, 6)
    (g, a, e, w), = seam_windows(partition_bounds(8, 2))
    assert (g, a, e) == (0, 2, 6) and w[1] == w[2] > 0.7 and w[0] == w[3] < 0.3
    with pytest.raises(ConfigError, match="prior.sampling.seam"):
        reverse_diffusion(models, (1, 8, 4, 4), steps=2, progress=False, seam="shift")


def test_plateau_window_alone_predicts_the_boundary_slices():
    """Slab of 8: weights 1/4, 3/4, then 1 on the four middle slices; there eps is the window's only."""
    from physdiff.models.sampling import partition_eps, seam_windows

    (g, a, e, w), = seam_windows(partition_bounds(16, 2), "plateau")
    assert (g, a, e) == (0, 4, 12)
    torch.testing.assert_close(w, torch.tensor([0.25, 0.75, 1, 1, 1, 1, 0.75, 0.25]))
    with pytest.raises(ConfigError, match="window shape"):
        seam_windows(partition_bounds(16, 2), "triangle")

    # model g returns g + 10 * (its slab's first slice value): tells slab forwards from window ones
    def model(g):
        return lambda x, t: torch.full_like(x, g) + 10 * x[:, :, :1]

    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 16, 1, 1).expand(1, 1, 16, 2, 2)
    eps = partition_eps([model(0), model(1)], [torch.device("cpu")] * 2, partition_bounds(16, 2), x, 5,
                        "plateau")[0, 0, :, 0, 0]
    window, own0, own1 = 40.0, 0.0, 81.0  # model 0 on [4, 12) sees slice 4 first; slabs start at 0 and 8
    torch.testing.assert_close(eps[6:10], torch.full((4,), window))
    torch.testing.assert_close(eps[:4], torch.full((4,), own0))
    torch.testing.assert_close(eps[12:], torch.full((4,), own1))
    torch.testing.assert_close(eps[4], torch.tensor(0.25 * window + 0.75 * own0))
    torch.testing.assert_close(eps[11], torch.tensor(0.25 * window + 0.75 * own1))


def test_schedule_entered_part_way_keeps_the_spacing():
    full = DIFF.schedule(50)
    assert DIFF.schedule(50, start=1.0) == full
    half = DIFF.schedule(50, start=0.5)
    assert half == [t for t in full if t < 500] and len(half) == 25
    assert DIFF.schedule(50, start=1e-4) == full[-1:]  # always at least the last step
    with pytest.raises(ConfigError, match="start"):
        DIFF.schedule(50, start=0.0)


class NullEps:
    """eps = 0: predict_x0 is x_t / sqrt(abar), so DDIM with eta 0 only rescales x_t."""

    def __call__(self, x, t):
        return torch.zeros_like(x)


def test_a_part_way_start_begins_at_the_noised_guess():
    guess = torch.linspace(-0.8, 0.8, 2 * 6 * 6).reshape(2, 6, 6)
    # With eps = 0 and eta = 0 the loop maps x_t0 to x_t0 / sqrt(abar_t0) = guess + sqrt((1 - a)/a) z.
    out = reverse_diffusion([NullEps(), NullEps()], (1, 2, 6, 6), steps=1000, eta=0.0, start=0.003, x_init=guess,
                            seed=5, progress=False)
    a = DIFF.abar(DIFF.schedule(1000, start=0.003)[0])
    z = torch.randn((1, 1, 2, 6, 6), generator=torch.Generator().manual_seed(5))
    expected = ((guess + np.sqrt((1 - a) / a) * z[0, 0]) + 1) / 2
    np.testing.assert_allclose(out[0].numpy(), expected.clamp(0, 1).numpy(), atol=1e-5)
    # from pure noise (start 1) the same loop knows nothing of the guess
    far = reverse_diffusion([NullEps(), NullEps()], (1, 2, 6, 6), steps=1000, eta=0.0, x_init=guess, seed=5,
                            progress=False)
    assert np.abs(far[0].numpy() - (guess.numpy() + 1) / 2).mean() > 0.2
    with pytest.raises(ConfigError, match="x_init"):
        reverse_diffusion([NullEps()], (1, 2, 6, 6), start=0.5, progress=False)


class WithMean(MarkerModel):
    """A marker model that carries a training mean, as `load_model` attaches one."""

    def __init__(self, marker: float, mean: torch.Tensor):
        super().__init__(marker)
        self.data_mean = mean


def test_below_mean_snr_the_training_mean_replaces_the_networks_x0():
    means = [torch.full((2, 4, 4), 0.1), torch.linspace(0.2, 0.9, 3 * 16).reshape(3, 4, 4)]
    models = [WithMean(0.5, means[0]), WithMean(0.5, means[1])]
    stacked = 2 * torch.cat(means) - 1  # network scale
    seen = []
    hook = lambda x0, t: seen.append((t, x0.clone())) or x0
    ts = DIFF.schedule(10)
    # a threshold between the SNR of the first and second steps replaces the first x0 only
    snr = [DIFF.abar(t) / (1 - DIFF.abar(t)) for t in ts[:2]]
    reverse_diffusion(models, (2, 5, 4, 4), steps=10, seed=0, progress=False, x0_correction=hook,
                      mean_snr=float(np.sqrt(snr[0] * snr[1])))
    torch.testing.assert_close(seen[0][1].cpu(), stacked.expand(2, 1, 5, 4, 4))  # x0 is on CUDA where there is one
    for _, x0 in seen[1:]:  # later steps are the networks' (0.5 everywhere)
        torch.testing.assert_close(x0, torch.full_like(x0, 0.5), atol=1e-3, rtol=0)
    # at every step: with eta 0 the sample is the mean itself
    out = reverse_diffusion(models, (1, 5, 4, 4), steps=10, eta=0.0, seed=0, progress=False, mean_snr=1e9)
    torch.testing.assert_close(out[0], torch.cat(means), atol=1e-5, rtol=0)
    # 0 (the default) never uses it: the networks' marker throughout
    out = reverse_diffusion(models, (1, 5, 4, 4), steps=10, eta=0.0, seed=0, progress=False)
    torch.testing.assert_close(out[0], torch.full((5, 4, 4), 0.75), atol=1e-4, rtol=0)


def test_mean_snr_needs_a_fitting_training_mean_in_every_model():
    with pytest.raises(InputError, match="partition model 1 carries no training mean"):
        reverse_diffusion([WithMean(0.0, torch.zeros(2, 4, 4)), MarkerModel(0.0)], (1, 4, 4, 4), steps=2,
                          mean_snr=0.1, progress=False)
    with pytest.raises(InputError, match=r"partition model 0's training mean has shape \(3, 4, 4\)"):
        reverse_diffusion([WithMean(0.0, torch.zeros(3, 4, 4)), WithMean(0.0, torch.zeros(2, 4, 4))], (1, 4, 4, 4),
                          steps=2, mean_snr=0.1, progress=False)
    with pytest.raises(ConfigError, match="mean_snr"):
        reverse_diffusion([MarkerModel(0.0)], (1, 4, 4, 4), steps=2, mean_snr=-1.0, progress=False)
    # without mean_snr a model without a mean samples as before
    reverse_diffusion([MarkerModel(0.0)], (1, 4, 4, 4), steps=2, progress=False)


def test_steps_that_take_the_mean_do_not_run_the_networks():
    models = [WithMean(0.5, torch.zeros(2, 4, 4)), WithMean(0.5, torch.zeros(2, 4, 4))]
    ts = DIFF.schedule(10)
    snr = [DIFF.abar(t) / (1 - DIFF.abar(t)) for t in ts]
    reverse_diffusion(models, (1, 4, 4, 4), steps=10, seed=0, progress=False, mean_snr=float(np.sqrt(snr[1] * snr[2])))
    assert [len(m.slab_shapes) for m in models] == [8, 8]  # 2 of the 10 steps took the mean
