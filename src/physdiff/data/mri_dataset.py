"""Build the MRI dataset: find volumes, preprocess each to (S, H, W), split by subject.

This is what the `prepare_mri` and `prepare_roots` rules run. The arrays it returns stack the
volumes of a split as (N, S, H, W) float32 in [0, 1].
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from physdiff.data.mri_prep import preprocess_volume, split_subjects
from physdiff.data.nifti import find_brats_subjects, find_nifti_volumes, load_volume, volume_id
from physdiff.errors import ConfigError, InputError

log = logging.getLogger(__name__)


def find_volumes(source: str, path: str | os.PathLike) -> list[Path]:
    """The volume files of a source: `synthetic`/`brats` (BraTS layout) or `nifti` (any folder)."""
    if source in ("synthetic", "brats"):
        return find_brats_subjects(path)
    if source == "nifti":
        return find_nifti_volumes(path)
    raise ConfigError(f"config key 'mri.source': unknown source '{source}'; expected synthetic, brats or nifti")


def preprocess_files(
    paths: Sequence[Path], *, n_slices: int, size: Sequence[int], margin: float, progress: bool = True
) -> np.ndarray:
    """Load and preprocess every volume into one (N, S, H, W) float32 array in [0, 1]."""
    out = np.empty((len(paths), n_slices, *size), dtype=np.float32)
    for i, path in enumerate(tqdm(paths, desc="preprocess", unit="vol", disable=not progress)):
        out[i] = preprocess_volume(load_volume(path), n_slices=n_slices, size=tuple(size), margin=margin)
    return out


def build_mri_splits(
    source: str,
    path: str | os.PathLike,
    *,
    n_slices: int,
    size: Sequence[int],
    margin: float,
    fractions: dict,
    seed: int,
    train_contrasts: Sequence[str] = ("flair",),
    progress: bool = True,
) -> dict[str, tuple[list[str], np.ndarray]]:
    """Split the subjects (seeded) and preprocess each split: {split: (subject ids, array)}.

    The split is by subject, on the FLAIR files. `train_contrasts` other than flair (BraTS
    modalities) add the training subjects' volumes of those modalities to the training array,
    after the FLAIR ones and in that order, so it holds len(train_contrasts) x the training subjects.
    """
    paths = find_volumes(source, path)
    by_id = {volume_id(p): p for p in paths}
    if len(by_id) != len(paths):
        raise ConfigError(f"{path}: two volumes share a subject id; give each subject one file")
    log.info("found %d volumes under %s", len(paths), path)
    splits = split_subjects(
        list(by_id), fractions=(fractions["train"], fractions["val"], fractions["test"]), seed=seed
    )
    out = {
        name: (ids, preprocess_files([by_id[i] for i in ids], n_slices=n_slices, size=size, margin=margin, progress=progress))
        for name, ids in splits.items()
    }
    extra = [c for c in train_contrasts if c != "flair"]
    if extra:
        if source not in ("synthetic", "brats"):
            raise ConfigError(f"config key 'mri.train_contrasts': {extra} needs BraTS-layout data, not source '{source}'")
        ids, train = out["train"]
        arrays = [train]
        for contrast in extra:
            files = {volume_id(p): p for p in find_brats_subjects(path, modality=contrast)}
            missing = [i for i in ids if i not in files]
            if missing:
                raise InputError(f"{path}: mri.train_contrasts asks for {contrast}, but training subject(s) "
                                 f"{', '.join(missing[:5])} have no {missing[0]}_{contrast}.nii[.gz]")
            arrays.append(preprocess_files([files[i] for i in ids], n_slices=n_slices, size=size, margin=margin,
                                           progress=progress))
        out["train"] = (ids, np.concatenate(arrays))
        log.info("training array: %d subjects x %s = %d volumes", len(ids), ["flair", *extra], len(out["train"][1]))
    return out


def planned_split_sizes(source: str, path: str | os.PathLike | None, n_synthetic: int, fractions: dict, seed: int) -> dict[str, int]:
    """How many subjects each split will hold, known before any volume is read (for the DAG)."""
    n = n_synthetic if source == "synthetic" else len(find_volumes(source, path))
    splits = split_subjects([str(i) for i in range(n)], fractions=(fractions["train"], fractions["val"], fractions["test"]), seed=seed)
    return {name: len(ids) for name, ids in splits.items()}
