"""The 4D-STEM data <-> [0, 1] transform: exact round trips and the choice of gamma."""

import json

import numpy as np
import pytest
import torch

from physdiff.data.prior_data import choose_gamma, encode_potentials, stem_transform
from physdiff.data.transforms import PowerTransform, load_transform, transform_from_dict
from physdiff.errors import ConfigError


def _potentials(seed=0):
    """Sparse peaks (hundreds to thousands of V·Å) on a near-zero background, like crystal slices."""
    rng = np.random.default_rng(seed)
    v = rng.exponential(2.0, (3, 4, 16, 16)).astype(np.float32)
    v[:, :, ::5, ::5] = rng.uniform(200, 2963, v[:, :, ::5, ::5].shape)
    return v


@pytest.mark.parametrize("gamma", [1.0, 0.5, 0.23])
def test_power_transform_round_trips_to_volt_angstrom(gamma):
    v = _potentials()
    tr = PowerTransform(float(v.max()), gamma)
    u = encode_potentials(v, tr)
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() <= 1
    back = tr.decode(u)
    # float32 keeps ~7 digits of u; decoding amplifies relative error by 1/gamma near 0
    np.testing.assert_allclose(back, v, rtol=2e-6 / gamma, atol=1e-5 * tr.scale)
    ut = tr.encode(torch.from_numpy(v))
    torch.testing.assert_close(tr.decode(ut), torch.from_numpy(v), rtol=2e-6 / gamma, atol=1e-5 * tr.scale)


def test_stored_transform_is_the_same_map(tmp_path):
    v = _potentials()
    tr = stem_transform(v, _potentials(1), "auto")
    path = tmp_path / "scale.json"
    path.write_text(json.dumps({**tr.to_dict(), "n_samples": 3}))
    loaded = load_transform(path)
    assert loaded.to_dict() == tr.to_dict() and set(tr.to_dict()) == {"kind", "scale_V_A", "gamma"}
    np.testing.assert_array_equal(loaded.encode(v), tr.encode(v))
    assert transform_from_dict({"scale_V_A": 10.0}).gamma == 1.0  # files from before gamma


def test_auto_gamma_lifts_the_validation_mean_to_the_target():
    train, val = _potentials(0), _potentials(1)
    tr = stem_transform(train, val, "auto", target_mean=0.25)
    assert 0.05 < tr.gamma < 1 and tr.scale == train.max()
    assert abs(float(tr.encode(val).mean()) - 0.25) < 1e-3
    assert float(PowerTransform(tr.scale, 1.0).encode(val).mean()) < 0.05  # the problem it fixes
    assert choose_gamma(np.full(10, 900.0), 1000.0) == 1.0  # already bright: no lift


def test_bad_gamma_is_config_error():
    with pytest.raises(ConfigError, match="prior.stem_transform.gamma"):
        stem_transform(_potentials(), None, "auto")
    with pytest.raises(ConfigError, match="prior.stem_transform.gamma"):
        stem_transform(_potentials(), None, 2.0)
