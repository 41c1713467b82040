"""Training volumes for the diffusion prior, as (N, S, H, W) float32 in [0, 1].

MRI volumes are already in [0, 1]. Crystal potentials (V·Å, non-negative) are divided by the
largest value in the training set; that scale is saved beside the array so generated volumes
can be mapped back to V·Å.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from physdiff.data.stem_sim import load_sample
from physdiff.errors import InputError

log = logging.getLogger(__name__)


def stem_prior_volumes(paths: Sequence[str | Path], *, progress: bool = True) -> tuple[np.ndarray, float]:
    """Stack the potentials of 4D-STEM samples and scale them to [0, 1]; returns (array, scale in V·Å)."""
    if not paths:
        raise InputError("no 4D-STEM training samples to build the prior's data from")
    volumes, shape = [], None
    for path in tqdm(paths, desc="potentials", unit="sample", disable=not progress):
        potential = np.asarray(load_sample(path)["potential"], np.float32)
        if shape is not None and potential.shape != shape:
            raise InputError(f"{path}: potential shape {potential.shape} differs from {shape}; "
                             "every training sample needs the same (S, H, W) (stem.simulation.gpts, n_slices)")
        shape = potential.shape
        volumes.append(potential)
    stack = np.stack(volumes)
    scale = float(stack.max())
    if scale <= 0:
        raise InputError("every training potential is zero or negative; expected projected potentials in V·Å")
    # abTEM band-limits the potential, which leaves slight negative ringing between atoms
    # (about -1 V·Å against peaks of hundreds); the prior works on [0, 1], so it is clipped.
    if stack.min() < 0:
        log.info("clipping negative band-limit ringing (min %.3g V·Å, %.2g of the scale) to 0", stack.min(), -stack.min() / scale)
    return np.clip(stack / scale, 0.0, 1.0), scale
