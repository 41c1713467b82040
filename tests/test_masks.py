"""k-space undersampling masks: acceleration, centre band, convention, seeding."""

import numpy as np
import pytest

from physdiff.data.masks import MASK_KINDS, acceleration_of, center_band, holdout_lines, make_mask
from physdiff.errors import ConfigError, InputError

SHAPE = (96, 128)
CENTER = {4: 0.08, 8: 0.04}  # the centre fractions of docs/method.md, "MRI"


@pytest.mark.parametrize("acceleration", [4, 8])
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("n_slices", [None, 5])
def test_every_kind_samples_round_w_over_r_lines(kind, acceleration, n_slices):
    # One convention for all kinds (fastMRI's): round(W / R) lines in all, centre band included.
    mask = make_mask(kind, shape=SHAPE, acceleration=acceleration, center_fraction=CENTER[acceleration], seed=0,
                     n_slices=n_slices)
    lines = mask[..., 0, :].reshape(-1, SHAPE[1])
    assert (lines.sum(axis=1) == round(SHAPE[1] / acceleration)).all()
    assert acceleration_of(mask) == pytest.approx(acceleration, rel=0.02)


def test_uniform_mask_is_an_equispaced_comb_outside_the_centre_band():
    mask = make_mask("uniform", shape=(1, 64), acceleration=4, center_fraction=0.08, seed=0)
    band = set(center_band(64, 0.08))
    outside = [k for k in np.flatnonzero(mask[0]) if k not in band]
    gaps = np.diff([k for k in outside if k < min(band)])
    assert gaps.max() - gaps.min() <= 1


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_mask_samples_whole_phase_encode_lines_and_full_centre(kind):
    mask = make_mask(kind, shape=SHAPE, acceleration=4, center_fraction=0.08, seed=3)
    assert mask.shape == SHAPE and mask.dtype == bool
    assert (mask == mask[:1]).all(), "each phase-encode column must be all sampled or all skipped"
    band = center_band(SHAPE[1], 0.08)
    assert len(band) == round(0.08 * SHAPE[1])
    assert mask[:, band].all()


def test_centre_band_holds_k_zero_of_fftshift():
    # np.fft.fftshift puts frequency 0 at index W // 2: the band must contain it, odd W too.
    for width in (64, 65, 128):
        freqs = np.fft.fftshift(np.fft.fftfreq(width))
        band = center_band(width, 0.1)
        assert freqs[width // 2] == 0 and width // 2 in band
        # ... and be the lowest |k| there are.
        assert np.allclose(np.sort(np.abs(freqs[band])), np.sort(np.abs(freqs))[: len(band)])


def test_masks_are_deterministic_for_a_seed():
    for kind in MASK_KINDS:
        a = make_mask(kind, shape=SHAPE, acceleration=4, center_fraction=0.08, seed=7, n_slices=4)
        b = make_mask(kind, shape=SHAPE, acceleration=4, center_fraction=0.08, seed=7, n_slices=4)
        assert np.array_equal(a, b)
    c = make_mask("random", shape=SHAPE, acceleration=4, center_fraction=0.08, seed=8)
    d = make_mask("random", shape=SHAPE, acceleration=4, center_fraction=0.08, seed=7)
    assert not np.array_equal(c, d)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_per_slice_masks_differ_between_slices(kind):
    stack = make_mask(kind, shape=SHAPE, acceleration=4, center_fraction=0.08, seed=1, n_slices=8)
    assert stack.shape == (8, *SHAPE)
    distinct = {stack[s, 0].tobytes() for s in range(8)}
    assert len(distinct) > 1
    band = center_band(SHAPE[1], 0.08)
    assert stack[:, :, band].all()


def test_gaussian_lines_cluster_nearer_k_zero_than_random():
    width = SHAPE[1]

    def mean_abs_k(kind):
        stack = make_mask(kind, shape=(1, width), acceleration=8, center_fraction=0.0, seed=5, n_slices=200)
        k = np.abs(np.arange(width) - width // 2)
        return (stack[:, 0, :] * k).sum() / stack.sum()

    # Flat density over |k| <= W/2 gives mean |k| ~ W/4 = 32; the gaussian (std W/4) much less.
    assert mean_abs_k("random") == pytest.approx(width / 4, rel=0.1)
    assert mean_abs_k("gaussian") < 0.8 * mean_abs_k("random")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kind="spiral", acceleration=4, center_fraction=0.08),
        dict(kind="random", acceleration=0.5, center_fraction=0.08),
        dict(kind="random", acceleration=4, center_fraction=1.0),
        dict(kind="random", acceleration=4, center_fraction=-0.1),
    ],
)
def test_bad_mask_settings_raise_config_error(kwargs):
    kind = kwargs.pop("kind")
    with pytest.raises(ConfigError):
        make_mask(kind, shape=SHAPE, seed=0, **kwargs)


def test_acceleration_of_empty_mask_is_an_input_error():
    with pytest.raises(InputError):
        acceleration_of(np.zeros(SHAPE, dtype=bool))
    assert acceleration_of(np.ones(SHAPE, dtype=bool)) == 1.0


@pytest.mark.parametrize("n_slices", [None, 5])
def test_holdout_splits_the_outer_lines_and_keeps_the_centre(n_slices):
    mask = make_mask("gaussian", shape=(16, 64), acceleration=4, center_fraction=0.08, seed=3, n_slices=n_slices)
    kept, held = holdout_lines(mask, 0.25, center_fraction=0.08, seed=7)
    assert not (kept & held).any() and np.array_equal(kept | held, mask)
    centre = center_band(64, 0.08)
    for k, h, m in zip(kept.reshape(-1, 16, 64), held.reshape(-1, 16, 64), mask.reshape(-1, 16, 64)):
        assert k[:, centre].all() and not h[:, centre].any()
        outer = np.setdiff1d(np.flatnonzero(m[0]), centre)  # 11 lines at R = 4, W = 64 (16 minus a 5-line centre)
        assert h[0].sum() == round(0.25 * len(outer)) == 3
        assert (h == h[:1]).all()  # whole lines
    again = holdout_lines(mask, 0.25, center_fraction=0.08, seed=7)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(holdout_lines(mask, 0.25, center_fraction=0.08, seed=8)[1], held)


def test_holdout_bad_fraction_and_centre_only_mask():
    mask = make_mask("uniform", shape=(8, 32), acceleration=4, center_fraction=0.08, seed=0)
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="holdout fraction"):
            holdout_lines(mask, fraction, center_fraction=0.08, seed=0)
    centre_only = np.zeros((8, 32), bool)
    centre_only[:, center_band(32, 0.25)] = True
    with pytest.raises(InputError, match="no sampled line outside the centre band"):
        holdout_lines(centre_only, 0.5, center_fraction=0.25, seed=0)
