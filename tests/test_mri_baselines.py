"""Classical MRI baselines on a small synthetic phantom at R = 4, and sigpy's conventions."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import sigpy as sp
import sigpy.mri as mr

from physdiff.data.phantoms import blob_volume
from physdiff.errors import ConfigError, InputError
from physdiff.metrics.ssim import ssim_volume
from physdiff.physics.mri import MRIForward, simulate_kspace
from physdiff.recon.mri_baselines import (
    MRI_BASELINES,
    choose_lambda,
    cs_l1_wavelet,
    estimate_support,
    projection_based,
    tv_recon,
    wavelet_shrink,
    zero_filled_recon,
)

SIZE, N_SLICES = 64, 3
# Weights in the middle of the range that does well on this phantom; choose_lambda is tested apart.
PARAMS = {"zero_filled": {}, "cs_l1_wavelet": {"lam": 3e-3}, "tv": {"lam": 3e-2}, "projection": {"wavelet_thresh": 1e-2}}


def row_mask(kind, size=SIZE, r=4, centre=5, seed=0):
    """R = 4 phase-encode rows: every r-th ('uniform') or as many drawn at random ('random'), plus a centre band."""
    lines = np.zeros(size, bool)
    if kind == "uniform":
        lines[::r] = True
    else:
        lines[np.random.default_rng(seed).choice(size, size // r, replace=False)] = True
    lines[size // 2 - centre // 2: size // 2 - centre // 2 + centre] = True
    return np.broadcast_to(lines[:, None], (size, size)).copy()


@pytest.fixture(scope="module")
def volume():
    return blob_volume()


@pytest.mark.parametrize("kind", ["uniform", "random"])
def test_every_baseline_beats_zero_filled(volume, kind):
    mask = row_mask(kind)
    y = simulate_kspace(volume, mask)
    scores = {}
    for name, fn in MRI_BASELINES.items():
        rec = fn(y, mask, **PARAMS[name])
        assert rec.shape == volume.shape and rec.dtype == np.float32
        scores[name] = ssim_volume(rec, volume)
    for name in ("cs_l1_wavelet", "tv", "projection"):
        assert scores[name] > scores["zero_filled"] + 0.02, scores


def test_zero_filled_equals_inverse_fft_of_masked_kspace(volume):
    mask = row_mask("random")
    y = simulate_kspace(volume, mask, noise_std=0.01, seed=1)
    np.testing.assert_allclose(zero_filled_recon(y, mask), np.abs(sp.ifft(y * mask, axes=(-2, -1))), atol=1e-6)


def test_sigpy_sense_operator_is_our_forward_operator(volume):
    # single coil with a map of ones and the mask as weights: sigpy's A is M ⊙ F in our convention
    mask = row_mask("uniform")
    sense = mr.linop.Sense(np.ones((1, SIZE, SIZE), np.complex64), weights=mask.astype(np.float32))
    x = volume[1].astype(np.complex64)
    np.testing.assert_allclose(sense(x)[0], MRIForward(mask).A(x), atol=1e-6)


@pytest.mark.parametrize("fn", [cs_l1_wavelet, tv_recon])
def test_sigpy_apps_without_regularisation_return_zero_filled(volume, fn):
    # from x = 0 both solvers stay in the range of A^H, so with lam = 0 they converge to A^H y
    mask = row_mask("random")
    y = simulate_kspace(volume, mask)
    np.testing.assert_allclose(fn(y, mask, lam=0.0, max_iter=300), zero_filled_recon(y, mask), atol=2e-3)


@pytest.mark.parametrize("name", ["cs_l1_wavelet", "tv", "projection"])
def test_mask_not_kspace_zeros_defines_sampling_and_runs_are_deterministic(volume, name):
    mask = row_mask("uniform")
    y = simulate_kspace(volume, mask)
    # noise in the unsampled entries must be ignored (sigpy would otherwise guess the mask from y != 0)
    y_dirty = y + 0.1 * (~mask) * np.random.default_rng(2).standard_normal(y.shape)
    state = np.random.get_state()[1].copy()
    first = MRI_BASELINES[name](y, mask, **PARAMS[name])
    assert np.array_equal(np.random.get_state()[1], state), "the global numpy RNG was consumed"
    np.testing.assert_array_equal(MRI_BASELINES[name](y, mask, **PARAMS[name]), first)
    np.testing.assert_allclose(MRI_BASELINES[name](y_dirty, mask, **PARAMS[name]), first, atol=1e-5)


def test_per_slice_masks_are_applied_slice_by_slice(volume):
    masks = np.stack([row_mask("random", seed=s) for s in range(N_SLICES)])
    y = simulate_kspace(volume, masks)
    rec = cs_l1_wavelet(y, masks, lam=3e-3)
    np.testing.assert_allclose(rec[1], cs_l1_wavelet(y[1:2], masks[1], lam=3e-3)[0], atol=1e-6)
    rec_p = projection_based(y, masks)
    np.testing.assert_allclose(rec_p[2], projection_based(y[2:3], masks[2], support=estimate_support(y[2:3], masks[2]))[0],
                               atol=1e-5)


def test_support_covers_object_and_wavelet_shrink_is_orthonormal(volume):
    mask = row_mask("uniform")
    support = estimate_support(simulate_kspace(volume, mask), mask)
    assert support[volume > 0.1].all() and not support.all()
    x = np.random.default_rng(3).standard_normal((2, 15, 17))
    np.testing.assert_allclose(wavelet_shrink(x, 1e-12), x, atol=1e-9)  # perfect reconstruction, odd sizes too
    assert np.linalg.norm(wavelet_shrink(x, 0.5)) < np.linalg.norm(x)


def test_choose_lambda_returns_an_interior_choice_and_its_table(volume):
    grid = [3e-2, 3.0]  # 3.0 flattens every slice and must lose
    result = choose_lambda("tv", [volume[:2], volume[1:]], row_mask("uniform"), grid, max_iter=50, max_extend=4)
    table = result["table"]
    lams = [row["lam"] for row in table]
    assert lams == sorted(lams) and set(grid) <= set(lams) and len(lams) > len(grid)
    assert result["best"] == max(table, key=lambda row: row["ssim_mean"])["lam"]
    assert not result["on_edge"] and lams[0] < result["best"] < lams[-1]
    assert table[-1]["ssim_mean"] < max(row["ssim_mean"] for row in table)
    with pytest.raises(ConfigError, match="no regularisation weight"):
        choose_lambda("zero_filled", [volume], row_mask("uniform"), grid)
    with pytest.raises(ConfigError, match="empty"):
        choose_lambda("tv", [volume], row_mask("uniform"), [])


@pytest.mark.parametrize("name", ["cs_l1_wavelet", "tv", "projection"])
def test_explicit_default_start_equals_none_and_truth_start_helps(volume, name):
    mask = row_mask("random")
    y = simulate_kspace(volume, mask)
    default = np.zeros(volume.shape, np.complex64) if name == "tv" else MRIForward(mask).A_adjoint(y)
    params = dict(PARAMS[name], **({"max_iter": 5} if name != "projection" else {"n_iter": 5}))
    fn = MRI_BASELINES[name]
    np.testing.assert_allclose(fn(y, mask, x0=default, **params), fn(y, mask, **params), atol=1e-6)
    from_truth = ssim_volume(fn(y, mask, x0=volume, **params), volume)
    assert from_truth > ssim_volume(fn(y, mask, x0=np.zeros_like(volume), **params), volume)
    with pytest.raises(InputError, match="x0"):
        fn(y, mask, x0=volume[:1], **params)


@pytest.mark.parametrize("name", list(MRI_BASELINES))
def test_bad_inputs_raise_input_error(volume, name):
    mask = row_mask("uniform")
    y = simulate_kspace(volume, mask)
    bad = y.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(InputError, match="k-space y: holds NaN"):
        MRI_BASELINES[name](bad, mask, **PARAMS[name])
    with pytest.raises(InputError, match="mask: shape .* does not match"):
        MRI_BASELINES[name](y, mask[:, :32], **PARAMS[name])
    with pytest.raises(InputError, match="per-slice mask"):
        MRI_BASELINES[name](y, np.stack([mask] * (N_SLICES + 1)), **PARAMS[name])
    with pytest.raises(InputError, match=r"expected shape \(S, H, W\)"):
        MRI_BASELINES[name](y[0], mask, **PARAMS[name])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bart") is None, reason="the bart CLI is not installed (apt-get install bart)")
def test_cs_l1_wavelet_is_within_reach_of_bart_pics(volume):
    # BART's `pics -l1` (random cycle spinning) is the standard implementation of CS-MRI; ours,
    # with its defaults at its best lambda on a small grid, must not trail BART's best (over its
    # haar and Daubechies wavelets) by more than 0.01.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from cs_vs_bart import bart_pics_l1

    mask = row_mask("random")
    y = simulate_kspace(volume, mask)
    grid = [3e-4, 1e-3, 3e-3, 1e-2]
    ours = max(ssim_volume(cs_l1_wavelet(y, mask, lam=lam), volume) for lam in grid)
    bart = max(ssim_volume(bart_pics_l1(y, lam, wavelet=w), volume) for lam in grid for w in ("haar", "dau2"))
    assert ours > bart - 0.01, (ours, bart)
