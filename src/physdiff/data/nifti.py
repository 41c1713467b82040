"""NIfTI volumes: load with validation, find BraTS subjects or any folder of volumes, write atomically.

Arrays are float32 with axes (x, y, z); axial slices lie along the last axis, as in BraTS
(240 x 240 x 155 at 1 mm).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from physdiff.errors import InputError
from physdiff.io import atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
BRATS_DATA_DIR = "MICCAI_BraTS2020_TrainingData"
_BRATS_SUBJECT = re.compile(r"^BraTS20_Training_(\d+)$")


def load_volume(
    path: str | os.PathLike, *, expected_shape: Sequence[int] | None = None
) -> np.ndarray:
    """Read a 3D NIfTI volume as float32 (x, y, z), checking shape and finiteness.

    A trailing singleton 4th axis (x, y, z, 1) is accepted and dropped; any other rank is an
    error, as is a missing, truncated or unreadable file, or NaN/inf voxels.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a NIfTI volume .nii or .nii.gz)")
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
        raise InputError(
            f"{path}: cannot read as a NIfTI volume ({type(exc).__name__}: {exc}); "
            "expected an intact .nii or .nii.gz file"
        ) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3D volume (x, y, z), got shape {data.shape}")
    if expected_shape is not None and tuple(data.shape) != tuple(int(n) for n in expected_shape):
        raise InputError(
            f"{path}: expected shape {tuple(expected_shape)}, got {tuple(data.shape)}"
        )
    n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise InputError(f"{path}: {n_bad} voxels are NaN or inf; expected finite intensities")
    return data


def find_brats_subjects(root: str | os.PathLike, *, modality: str = "flair") -> list[Path]:
    """List `BraTS20_Training_NNN/BraTS20_Training_NNN_<modality>.nii[.gz]` files, by subject number.

    `root` may be the `MICCAI_BraTS2020_TrainingData` folder itself or any folder above it.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: BraTS root folder not found")
    found: dict[int, Path] = {}
    for subject_dir in sorted(root.rglob("BraTS20_Training_*")):
        match = _BRATS_SUBJECT.match(subject_dir.name)
        if not match or not subject_dir.is_dir():
            continue
        for suffix in NIFTI_SUFFIXES:
            candidate = subject_dir / f"{subject_dir.name}_{modality}{suffix}"
            if candidate.is_file():
                # A subject number seen twice (two copies of the data set) keeps the first path.
                found.setdefault(int(match.group(1)), candidate)
                break
    if not found:
        raise InputError(
            f"{root}: no BraTS subjects found; searched for "
            f"'**/BraTS20_Training_NNN/BraTS20_Training_NNN_{modality}.nii[.gz]'"
        )
    return [found[number] for number in sorted(found)]


def find_nifti_volumes(folder: str | os.PathLike) -> list[Path]:
    """List the `.nii` and `.nii.gz` files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder of NIfTI volumes not found")
    paths = sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith(NIFTI_SUFFIXES)
    )
    if not paths:
        raise InputError(f"{folder}: no NIfTI volumes found; expected files named *.nii or *.nii.gz")
    return paths


def volume_id(path: str | os.PathLike) -> str:
    """Subject id of a volume file: its name without `.nii`/`.nii.gz` (and a BraTS modality suffix)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"^(BraTS20_Training_\d+)_\w+$", r"\1", name)


def centred_affine(shape: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A diagonal (RAS+) 4 x 4 affine with voxels of `spacing` mm and the volume's centre at world (0, 0, 0)."""
    spacing = np.asarray(spacing, dtype=float)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -spacing * (np.asarray(shape[:3]) - 1) / 2.0
    return affine


def write_volume(
    path: str | os.PathLike, volume: np.ndarray, *, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> Path:
    """Write a 3D float32 volume as NIfTI atomically; `spacing` is the voxel size in mm.

    The affine is diagonal (RAS+) with the volume centre at world (0, 0, 0).
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise InputError(f"{path}: can only write a 3D volume, got shape {volume.shape}")
    image = nib.Nifti1Image(volume, centred_affine(volume.shape, spacing))
    image.header.set_xyzt_units("mm")
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(image, str(tmp))
    return path
