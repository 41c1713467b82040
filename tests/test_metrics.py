"""SSIM and PSNR scores against skimage and closed forms."""

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter
from skimage.data import shepp_logan_phantom
from skimage.metrics import structural_similarity
from skimage.transform import resize

from physdiff.errors import InputError
from physdiff.metrics.ssim import psnr_volume, ssim_per_slice, ssim_phase_projection, ssim_volume


@pytest.fixture(scope="module")
def ref():
    p = resize(shepp_logan_phantom(), (48, 48), anti_aliasing=True)
    return np.stack([p, np.roll(p, 3, axis=0), 0.8 * p])  # (3, 48, 48), range [0, 1]


def noisy(ref, std, seed=0):
    return ref + std * np.random.default_rng(seed).standard_normal(ref.shape)


def test_identical_volumes_score_one(ref):
    assert ssim_volume(ref, ref) == pytest.approx(1.0)
    assert ssim_phase_projection(ref, ref, sigma=7.29e-4) == pytest.approx(1.0)
    assert psnr_volume(ref, ref) == float("inf")
    assert ssim_volume(torch.as_tensor(ref), torch.as_tensor(ref)) == pytest.approx(1.0)


def test_ssim_volume_takes_data_range_from_ground_truth(ref):
    # a reconstruction with a much larger range must still be judged on the reference's range
    x = 3.0 * noisy(ref, 0.05)
    expected = np.mean([structural_similarity(a, b, data_range=ref.max() - ref.min()) for a, b in zip(x, ref)])
    assert ssim_volume(x, ref) == pytest.approx(expected, rel=1e-12)
    wrong = np.mean([structural_similarity(a, b, data_range=x.max() - x.min()) for a, b in zip(x, ref)])
    assert abs(ssim_volume(x, ref) - wrong) > 1e-3


def test_ssim_of_constant_offset_matches_closed_form(ref):
    # x = ref + c: variances and covariance agree per window, so SSIM is the luminance term only,
    # (2 mu (mu + c) + C1) / (mu^2 + (mu + c)^2 + C1), averaged away from the 3-pixel border.
    c, r = 0.1, ref[:1]
    mu = uniform_filter(r[0], size=7)
    c1 = (0.01 * (r.max() - r.min())) ** 2
    lum = (2 * mu * (mu + c) + c1) / (mu**2 + (mu + c) ** 2 + c1)
    assert ssim_volume(r + c, r) == pytest.approx(lum[3:-3, 3:-3].mean(), rel=1e-6)


def test_psnr_matches_closed_form_and_orders_by_noise(ref):
    x = noisy(ref, 0.05)
    mse = np.mean((x - ref) ** 2)
    assert psnr_volume(x, ref) == pytest.approx(10 * np.log10((ref.max() - ref.min()) ** 2 / mse))
    assert psnr_volume(noisy(ref, 0.1), ref) < psnr_volume(x, ref)


def test_ssim_symmetry_and_ordering(ref):
    a, b = noisy(ref, 0.05, 1), noisy(ref, 0.05, 2)
    assert ssim_volume(a, b, data_range=1.0) == pytest.approx(ssim_volume(b, a, data_range=1.0))
    scores = [ssim_volume(noisy(ref, s), ref) for s in (0.01, 0.05, 0.2)]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    assert ssim_per_slice(noisy(ref, 0.05), ref).shape == (3,)


def test_phase_projection_is_a_2d_ssim_of_the_slice_sum(ref):
    v = 10.0 * ref
    v_rec = 10.0 * noisy(ref, 0.01)
    sigma = 7.2884e-4  # rad/(V·Å) at 200 kV
    p, p_rec = sigma * v.sum(0), sigma * v_rec.sum(0)
    assert ssim_phase_projection(v_rec, v, sigma) == pytest.approx(
        structural_similarity(p_rec, p, data_range=p.max() - p.min()), rel=1e-12)
    # SSIM with the range taken from the reference is invariant to a common scale, so sigma drops out
    assert ssim_phase_projection(v_rec, v, 1.0) == pytest.approx(ssim_phase_projection(v_rec, v, sigma), rel=1e-9)
    # only the sum over slices counts: reordering slices keeps the projection score, not the volume score
    perm = v_rec[[1, 2, 0]]
    assert ssim_phase_projection(perm, v, sigma) == pytest.approx(ssim_phase_projection(v_rec, v, sigma))
    assert ssim_volume(perm, v) < ssim_volume(v_rec, v) - 0.05


def test_bad_inputs_raise_input_error(ref):
    with pytest.raises(InputError, match="same 3-D shape"):
        ssim_volume(ref[:, :40], ref)
    with pytest.raises(InputError, match="same 3-D shape"):
        ssim_volume(ref[0], ref[0])
    bad = ref.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="reconstruction holds NaN"):
        ssim_volume(bad, ref)
    with pytest.raises(InputError, match="reference holds NaN"):
        psnr_volume(ref, bad)
    with pytest.raises(InputError, match="constant"):
        ssim_phase_projection(ref, np.ones_like(ref), sigma=1.0)
