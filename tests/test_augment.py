"""Intensity augmentation of MRI training slabs (physdiff.models.augment)."""

import numpy as np
import pytest
import torch

from physdiff.data.phantoms import blob_volume
from physdiff.errors import ConfigError
from physdiff.models.augment import IntensityAugment, _blur, _intensity_map, _zoom
from physdiff.models.train import train_prior


def _slabs(n=4, s=4, size=32):
    return torch.from_numpy(np.stack([blob_volume(s, size, seed=i) for i in range(n)]).astype(np.float32))


def test_off_is_the_identity_and_draws_nothing():
    x, gen = _slabs(), torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert IntensityAugment()(x, gen) is x
    assert torch.equal(gen.get_state(), state)


def test_every_kind_keeps_the_range_and_the_black_background():
    x = _slabs()
    x[:, :, :4] = 0  # a black border, as the preprocessed volumes have
    aug = IntensityAugment(contrast=1, bias_field=1, noise=0, blur=1)
    y = aug(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and torch.allclose(y.flatten(1).max(1).values, torch.ones(len(y)))
    # the blur reaches at most 3 sigma = 3 pixels into the border
    assert float(y[:, :, :1].abs().max()) == 0.0
    assert not torch.allclose(y, x / x.flatten(1).max(1).values[:, None, None, None])


def test_same_seed_same_augmentation_and_noise_changes_the_background():
    x = _slabs()
    x[:, :, :4] = 0
    aug = IntensityAugment(contrast=0.5, bias_field=0.5, noise=1, blur=0.5, noise_std=0.05)
    a, b = aug(x, torch.Generator().manual_seed(3)), aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert float((a[x == 0]).mean()) > 0  # Rician noise is positive in the background


def test_intensity_map_interpolates_and_can_flip_tissue_order():
    v = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    out = _intensity_map(v, torch.tensor([0.0, 1.0, 0.2]))  # knots at 0, 0.5, 1
    torch.testing.assert_close(out, torch.tensor([0.0, 0.5, 1.0, 0.6, 0.2]))


def test_blur_keeps_a_constant_image_and_spreads_a_point_like_scipy():
    from scipy.ndimage import gaussian_filter

    torch.testing.assert_close(_blur(torch.full((2, 16, 16), 0.7), 1.3), torch.full((2, 16, 16), 0.7))
    point = torch.zeros(1, 21, 21)
    point[0, 10, 10] = 1
    ref = gaussian_filter(point[0].numpy().astype(np.float64), 1.0, mode="reflect", truncate=3.0)
    np.testing.assert_allclose(_blur(point, 1.0)[0].numpy(), ref, atol=2e-3)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="contrast"):
        IntensityAugment(contrast=1.5)
    with pytest.raises(ConfigError, match="noise_std"):
        IntensityAugment(noise_std=-1)
    with pytest.raises(ConfigError, match="prior.augment"):
        train_prior(_slabs().numpy(), model_cfg={"dim": 8, "dim_mults": (1,), "attn_resolutions": ()}, steps=1,
                    augment={"gamma": 2}, progress=False)


def test_training_records_the_augmentation():
    cfg = {"dim": 8, "dim_mults": (1,), "attn_resolutions": (), "temporal_attn": False}
    res = train_prior(_slabs().numpy(), model_cfg=cfg, steps=2, batch_size=2, progress=False,
                      augment={"contrast": 1.0})
    assert res.config["augment"]["contrast"] == 1.0
    plain = train_prior(_slabs().numpy(), model_cfg=cfg, steps=2, batch_size=2, progress=False)
    assert "augment" not in plain.config


def test_zoom_at_one_is_the_identity_and_magnifies_a_ramp_about_its_window():
    ramp = torch.arange(32, dtype=torch.float32).expand(3, 32, 32) / 31  # value = column / 31
    torch.testing.assert_close(_zoom(ramp, 1.0, torch.zeros(2)), ramp)
    out = _zoom(ramp, 2.0, torch.tensor([0.0, 0.5]))  # the right half of the columns, twice as wide
    slope = out[:, :, 1:] - out[:, :, :-1]
    inner = slope[:, :, 1:-1]
    torch.testing.assert_close(inner, torch.full_like(inner, 0.5 / 31))
    assert abs(float(out[0, 0, 0]) - 15.75 / 31) < 1e-5  # first output pixel centre: input column 15.75
    torch.testing.assert_close(out[0], out[2])  # every slice the same window


def test_zoom_always_on_keeps_the_window_inside_and_crops_the_black_border():
    x = _slabs(n=8)
    x[:, :, :6] = 0
    x[:, :, -6:] = 0
    aug = IntensityAugment(zoom=1, zoom_max=3)
    y = aug(x, torch.Generator().manual_seed(4))
    assert y.shape == x.shape and float(y.min()) >= 0
    assert float((y == 0).float().mean()) < float((x == 0).float().mean())
    assert torch.equal(y, aug(x, torch.Generator().manual_seed(4)))
    # off, zoom draws nothing: the other kinds see the same random numbers as without the option
    a = IntensityAugment(contrast=1, blur=1)(x, torch.Generator().manual_seed(5))
    b = IntensityAugment(contrast=1, blur=1, zoom=0, zoom_max=3)(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="zoom_max"):
        IntensityAugment(zoom=0.5, zoom_max=0.5)
