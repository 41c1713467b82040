"""Out-of-distribution MRI volumes: plant root systems grown with CPlantBox, drawn as tubes.

A root system is grown from one of CPlantBox's `*_synMRI` parameter sets (made for synthetic
root MRI), its segments are voxelised as tubes of their own radius with partial volume at the
edge, blurred by a point-spread function and given Rician noise:
`I = |PV * a + n_re + i n_im|`, n ~ N(0, noise_sigma^2), a = 1 (root water signal).
Roots are bright on a dark soil background. Axes are (x, y, z) with z pointing up, so axial
slices lie along the last axis as for the brain volumes, and the generic NIfTI loader reads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Sequence

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from physdiff.data.nifti import write_volume
from physdiff.errors import ConfigError, MissingExtraError

ROOTS_SHAPE = (128, 128, 96)


def _plantbox() -> ModuleType:
    try:
        import plantbox
    except ImportError as exc:
        raise MissingExtraError("cplantbox", "roots", "Out-of-distribution plant-root volumes") from exc
    return plantbox


def _parameter_files() -> dict[str, Path]:
    root = Path(_plantbox().data_path())
    return {p.stem: p for p in sorted(root.rglob("*_synMRI*.xml"))}


def available_root_parameter_sets() -> list[str]:
    """Names of the `*_synMRI` root-system parameter sets that ship with CPlantBox."""
    return sorted(_parameter_files())


def grow_root_segments(
    parameter_set: str, *, seed: int, simulation_days: float, pot_radius_mm: float, pot_depth_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Grow a root system in a cylindrical pot; return segment end points (N, 2, 3) and radii (N,) in mm.

    Coordinates are CPlantBox's (x, y, z) with z up; the soil surface is z = 0 and the pot
    (CPlantBox's SDF_PlantContainer) keeps the roots inside the imaged field of view.
    """
    files = _parameter_files()
    if parameter_set not in files:
        raise ConfigError(
            f"root parameter set '{parameter_set}' is not in CPlantBox; expected one of {sorted(files)}"
        )
    pb = _plantbox()
    plant = pb.Plant()
    plant.readParameters(str(files[parameter_set]))
    plant.setGeometry(pb.SDF_PlantContainer(pot_radius_mm / 10, pot_radius_mm / 10, pot_depth_mm / 10, False))
    plant.setSeed(int(seed) % (2**31 - 1))
    plant.initialize(False)
    plant.simulate(float(simulation_days), False)
    analyser = pb.SegmentAnalyser(plant)
    nodes = np.array([[n.x, n.y, n.z] for n in analyser.nodes], dtype=np.float64) * 10.0  # cm -> mm
    segments = np.array([[s.x, s.y] for s in analyser.segments], dtype=np.int64)
    radii = np.asarray(analyser.getParameter("radius"), dtype=np.float64) * 10.0
    return nodes[segments], radii


def voxelise_tubes(
    segments: np.ndarray, radii: np.ndarray, *, shape: tuple[int, int, int], voxel_size_mm: float
) -> np.ndarray:
    """Partial-volume fraction (0..1) of tubes with the segments' radii on a grid centred in x, y.

    The grid's top slice (last z index) sits one voxel above the soil surface z = 0. Each voxel gets
    `clip(r + 1/2 - d, 0, 1)` with d its distance (voxels) to the nearest centre-line voxel and r
    that voxel's radius, scaled by `min(1, pi r^2)` so roots thinner than a voxel are faint.
    """
    shape = tuple(int(n) for n in shape)
    seg = segments / voxel_size_mm
    offset = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, shape[2] - 2.0])
    start, end = seg[:, 0] + offset, seg[:, 1] + offset
    # Sample each centre line every <= 0.5 voxel so the rasterised line has no gaps.
    counts = np.maximum(np.ceil(np.linalg.norm(end - start, axis=1) / 0.5).astype(int), 1) + 1
    owner = np.repeat(np.arange(len(seg)), counts)
    frac = np.concatenate([np.linspace(0.0, 1.0, c) for c in counts]) if len(seg) else np.zeros(0)
    points = start[owner] + frac[:, None] * (end - start)[owner]
    index = np.rint(points).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.asarray(shape)), axis=1)
    index, point_radius = index[inside], radii[owner][inside] / voxel_size_mm
    radius_grid = np.zeros(shape, dtype=np.float32)
    np.maximum.at(radius_grid, tuple(index.T), point_radius.astype(np.float32))
    if not radius_grid.any():
        return radius_grid
    distance, nearest = ndimage.distance_transform_edt(radius_grid == 0, return_indices=True)
    r = radius_grid[tuple(nearest)]
    del nearest
    fraction = np.clip(r + 0.5 - distance, 0.0, 1.0) * np.minimum(1.0, np.pi * r**2)
    return fraction.astype(np.float32)


def root_volume(
    parameter_set: str,
    *,
    seed: int,
    shape: tuple[int, int, int] = ROOTS_SHAPE,
    voxel_size_mm: float = 1.0,
    simulation_days: float = 10.0,
    noise_sigma: float = 0.05,
    psf_sigma_vox: float = 0.5,
) -> np.ndarray:
    """Synthetic root MRI, float32 (x, y, z): tube partial volume, Gaussian PSF, Rician noise.

    `noise_sigma` is relative to the signal of a voxel filled with root (1.0).
    """
    if noise_sigma < 0 or voxel_size_mm <= 0 or simulation_days <= 0:
        raise ConfigError(
            "root_volume: expected noise_sigma >= 0, voxel_size_mm > 0 and simulation_days > 0, got "
            f"{noise_sigma}, {voxel_size_mm}, {simulation_days}"
        )
    # The pot fills the field of view less a two-voxel rim, as a plant pot fills the scanner's.
    segments, radii = grow_root_segments(
        parameter_set, seed=seed, simulation_days=simulation_days,
        pot_radius_mm=voxel_size_mm * (min(shape[:2]) / 2 - 2), pot_depth_mm=voxel_size_mm * (shape[2] - 3),
    )
    volume = voxelise_tubes(segments, radii, shape=shape, voxel_size_mm=voxel_size_mm)
    if psf_sigma_vox > 0:
        volume = ndimage.gaussian_filter(volume, psf_sigma_vox)
    rng = np.random.default_rng(seed)
    sigma = np.float32(noise_sigma)
    real = volume + sigma * rng.standard_normal(volume.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(volume.shape, dtype=np.float32)
    return np.hypot(real, imag).astype(np.float32)


def write_root_volumes(
    out_dir: str | os.PathLike,
    *,
    n: int,
    seed: int,
    parameter_set: str | Sequence[str] | None = None,
    shape: tuple[int, int, int] = ROOTS_SHAPE,
    voxel_size_mm: float = 1.0,
    simulation_days: float = 10.0,
    noise_sigma: float = 0.05,
) -> list[Path]:
    """Write `n` root volumes `root_NNN_<set>.nii.gz`, cycling through the parameter sets.

    `parameter_set` is one name, a list of names, or None for every `*_synMRI` set. Volume
    seeds spawn from `seed` with numpy's SeedSequence.
    """
    if parameter_set is None:
        sets = available_root_parameter_sets()
    else:
        sets = [parameter_set] if isinstance(parameter_set, str) else list(parameter_set)
    children = np.random.SeedSequence(seed).spawn(n)
    paths = []
    for i, child in enumerate(tqdm(children, desc="root volumes", unit="volume")):
        name = sets[i % len(sets)]
        volume = root_volume(
            name, seed=int(child.generate_state(1)[0]), shape=shape, voxel_size_mm=voxel_size_mm,
            simulation_days=simulation_days, noise_sigma=noise_sigma,
        )
        path = Path(out_dir) / f"root_{i + 1:03d}_{name}.nii.gz"
        paths.append(write_volume(path, volume, spacing=(voxel_size_mm,) * 3))
    return paths
