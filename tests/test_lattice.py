"""The Bragg power share tells a lattice from scattered spots."""

import numpy as np
import pytest

from physdiff.errors import InputError
from physdiff.metrics.lattice import bragg_power_share


def _lattice(period=8, size=64, jitter=0.0, seed=0):
    """Gaussian columns on a square lattice, optionally displaced at random (scattered spots)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((size, size))
    for cy in range(0, size, period):
        for cx in range(0, size, period):
            dy, dx = rng.uniform(-jitter, jitter, 2)
            # periodic distance, so the lattice wraps around as a supercell does
            ry = (yy - cy - dy + size / 2) % size - size / 2
            rx = (xx - cx - dx + size / 2) % size - size / 2
            out += np.exp(-(ry ** 2 + rx ** 2) / 2.0)
    return out


def test_a_cosine_lattice_has_all_its_power_in_four_bins():
    yy, xx = np.mgrid[:64, :64]
    cosines = np.cos(2 * np.pi * 4 * yy / 64) + np.cos(2 * np.pi * 8 * xx / 64)
    volume = np.broadcast_to(cosines, (3, 64, 64))[None]
    # 4 nonzero bins of 4096: the top 0.1 % (4 bins) hold all of it, the top bin a quarter
    np.testing.assert_allclose(bragg_power_share(volume, top_fraction=4 / 4096), [1.0], atol=1e-12)
    np.testing.assert_allclose(bragg_power_share(volume, top_fraction=1 / 4096), [0.25], atol=1e-12)


def test_columns_on_a_lattice_score_near_one_and_scattered_ones_and_noise_do_not():
    lattice = _lattice()[None, None]
    scattered = _lattice(jitter=4.0)[None, None]
    noise = np.random.default_rng(1).normal(size=(1, 2, 64, 64))
    share = [bragg_power_share(v)[0] for v in (lattice, scattered, noise)]
    assert share[0] > 0.95 and share[1] < 0.8 and share[2] < 0.1
    assert share[0] > share[1] > share[2]


def test_bad_input_is_named():
    with pytest.raises(InputError, match="volumes must be"):
        bragg_power_share(np.zeros((64, 64)))
    with pytest.raises(InputError, match="top_fraction"):
        bragg_power_share(np.zeros((1, 1, 8, 8)), top_fraction=0)
    assert np.isnan(bragg_power_share(np.ones((1, 2, 8, 8)))[0])  # a flat volume has no power to share
