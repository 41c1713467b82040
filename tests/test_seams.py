"""The seam ratio of partitioned volumes."""

import numpy as np
import pytest

from physdiff.errors import InputError
from physdiff.metrics.seams import partition_boundaries, seam_ratio


def test_seam_ratio_of_a_ramp_with_one_jump():
    # Slices step by 0.01 each, except a jump of 0.05 between slices 3 and 4 (the boundary at 4).
    steps = np.full(7, 0.01)
    steps[3] = 0.05
    levels = np.concatenate([[0.0], np.cumsum(steps)])
    vols = np.broadcast_to(levels[None, :, None, None], (2, 8, 5, 5))
    assert seam_ratio(vols, [4]) == pytest.approx(5.0)
    assert seam_ratio(vols, [2]) == pytest.approx(0.01 / (0.10 / 6))  # a boundary away from the jump


def test_repeated_slices_with_a_jump_only_at_the_seam():
    vols = np.zeros((1, 6, 4, 4))
    vols[:, 3:] = 1.0  # repeated slices, one jump at the boundary of G = 2
    assert partition_boundaries(6, 2) == [3]
    assert seam_ratio(vols, [3]) == np.inf
    assert seam_ratio(np.ones((1, 6, 4, 4)), [3]) != seam_ratio(np.ones((1, 6, 4, 4)), [3])  # nan: no change anywhere


def test_bad_boundaries_are_input_errors():
    with pytest.raises(InputError, match="boundaries"):
        seam_ratio(np.zeros((1, 4, 2, 2)), [0])
    with pytest.raises(InputError, match=r"\(N, S, H, W\)"):
        seam_ratio(np.zeros((4, 2, 2)), [1])
