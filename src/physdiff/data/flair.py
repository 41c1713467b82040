"""Synthetic FLAIR-like brain volumes from the ICBM152 2009 tissue maps that nilearn ships.

Per subject (all drawn from one seed):
- tissue contrast with FLAIR ordering, `I = c_csf * p_csf + c_wm * p_wm + c_gm * p_gm`,
  c_csf << c_wm < c_gm (fluid attenuated, grey matter brighter than white matter);
- 0-3 hyperintense lesions, each a bright core inside a larger edema region;
- a random affine (rotation, scale, shift) plus a smooth elastic displacement, drawn on a coarse
  grid and interpolated, so no two brains have the same shape;
- a smooth multiplicative bias field `exp(b(x))` with b a quadratic polynomial;
- Rician noise `|I + n_re + i n_im|`, so the background holds noise only.

The same subject can also be drawn in T1 and T2 contrast (`contrasts`, BraTS's `t1`/`t2` files):
the same anatomy, warp, lesions and bias field, with that contrast's tissue intensities (T1: CSF
dark, white matter brightest, lesions dark; T2: CSF brightest, lesions bright) and noise. Each
contrast draws from a generator of its own, so every volume of a seed is the same whichever
contrasts are asked for. The prior can train on them (`mri.train_contrasts`) to learn brain
anatomy in more than one contrast (`benchmarks/studies/prior_study.md`, "Contrasts for real scans").

The field of view is the BraTS one, 240 x 240 x 155 mm, with the brain at its centre and
axial slices along the last axis. `shape` sets the voxel grid over that field of view
(1 mm voxels at the default 240 x 240 x 155). Coarser grids sample the 1 mm template without
anti-aliasing (fine for tests); for training data, generate at 1 mm and let `mri_prep` resize.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from physdiff.data.nifti import BRATS_DATA_DIR, write_volume

BRATS_SHAPE = (240, 240, 155)
FOV_MM = np.array([240.0, 240.0, 155.0])
# Labels of `FlairSubject.labels`. A voxel is CSF, GM or WM only where that tissue's probability
# exceeds PURE_TISSUE; background and partial-volume voxels are OTHER.
OTHER, CSF, GM, WM, EDEMA, CORE = 0, 1, 2, 3, 4, 5
PURE_TISSUE = 0.8


# Tissue intensities relative to white matter, (low, high) of a uniform draw per subject, of the
# contrasts other than FLAIR (whose draws are in `synth_flair_subject`): CSF, GM, lesion edema,
# lesion core. T1 (MPRAGE-like, as the ICBM152 T1 template): CSF < GM < WM, lesions hypointense;
# T2: WM < GM < CSF, lesions hyperintense.
CONTRASTS = ("flair", "t1", "t2")
_RATIOS = {
    "t1": {"csf": (0.15, 0.35), "gm": (0.6, 0.8), "edema": (0.6, 0.85), "core": (0.35, 0.6)},
    "t2": {"csf": (2.0, 3.0), "gm": (1.2, 1.5), "edema": (1.6, 2.2), "core": (1.8, 2.6)},
}


@dataclass
class FlairSubject:
    """One synthetic subject: the FLAIR volume, any other contrasts, and (optionally) hard tissue labels."""

    volume: np.ndarray  # float32 (x, y, z), arbitrary units, WM about 0.5
    labels: np.ndarray | None  # uint8 (x, y, z) with OTHER..CORE, or None
    spacing: tuple[float, float, float]  # voxel size (mm)
    others: dict[str, np.ndarray] = field(default_factory=dict)  # "t1"/"t2": float32 (x, y, z)


@functools.lru_cache(maxsize=1)
def _tissue_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the 1 mm ICBM152 2009 GM/WM/CSF probabilities and WM seed points from nilearn's package data.

    nilearn ships these three files (T1, GM, WM) inside its wheel; the loaders read them and
    need no network. CSF is what the skull-stripped brain holds beyond GM and WM.
    """
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1).get_fdata(dtype=np.float32)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    brain = np.clip(t1 / 0.05, 0.0, 1.0)  # soft brain mask: T1 > 5 % of its maximum
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    # Lesion centres lie in deep white matter, where gliomas and their edema mostly sit.
    deep_wm = ndimage.binary_erosion(wm > 0.9, iterations=3)
    seeds = np.argwhere(deep_wm)[::97].astype(np.float32)
    return csf, gm, wm, seeds


@dataclass
class _Lesion:
    box: tuple[slice, slice, slice]
    edema: np.ndarray  # soft masks in [0, 1] over the box
    core: np.ndarray
    edema_ratio: float  # FLAIR intensity relative to white matter
    core_ratio: float


def _draw_lesions(rng: np.random.Generator, shape: tuple[int, ...], wm_gm: np.ndarray, seeds: np.ndarray) -> list[_Lesion]:
    """Draw 0-3 lesions: an edema blob (about 1.6 x WM in FLAIR) around a brighter core (about 2 x WM)."""
    lesions = []
    for _ in range(int(rng.integers(0, 4))):
        centre = seeds[rng.integers(len(seeds))]
        core_radii = rng.uniform(3.0, 12.0) * rng.uniform(0.7, 1.3, size=3)  # mm
        edema_radii = core_radii * rng.uniform(1.5, 2.5)
        half = np.ceil(edema_radii.max() * 1.4).astype(int) + 2
        lo = np.maximum(centre.astype(int) - half, 0)
        hi = np.minimum(centre.astype(int) + half + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grid = np.ogrid[box]
        # Irregular outline: a smooth random field (~4 mm grain) perturbs the ellipsoid radius.
        wobble = ndimage.gaussian_filter(rng.standard_normal(tuple(hi - lo)).astype(np.float32), 4.0)
        wobble *= 0.25 / (wobble.std() + 1e-6)
        r2_edema = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, edema_radii))
        r2_core = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, core_radii))
        # Soft edges (~1 mm) and confined to parenchyma: edema spreads along white matter.
        edema = np.clip((1.0 + wobble - np.sqrt(r2_edema)) * 4.0, 0, 1) * wm_gm[box]
        core = np.clip((1.0 + wobble - np.sqrt(r2_core)) * 4.0, 0, 1) * wm_gm[box]
        lesions.append(_Lesion(box, edema, core, rng.uniform(1.5, 1.8), rng.uniform(1.9, 2.3)))
    return lesions


def _paint_lesions(image: np.ndarray, lesions: list[_Lesion], c_wm: float, ratios: list[tuple[float, float]]) -> None:
    """Paint the lesions into `image` in place, lesion i with intensities c_wm * ratios[i] (edema, core)."""
    for lesion, (edema_ratio, core_ratio) in zip(lesions, ratios):
        region = image[lesion.box]
        region += lesion.edema * (c_wm * edema_ratio - region)
        region += lesion.core * (c_wm * core_ratio - region)


def _label_lesions(labels: np.ndarray, lesions: list[_Lesion]) -> None:
    for lesion in lesions:
        lab = labels[lesion.box]
        lab[lesion.edema > 0.5] = EDEMA
        lab[lesion.core > 0.5] = CORE


def _sampling_coordinates(shape: tuple[int, int, int], rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """Template voxel coordinates (3, *shape) sampled by each output voxel: affine plus elastic warp."""
    spacing = FOV_MM / np.asarray(shape)
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]  # mm
    angles = np.deg2rad(rng.normal(0.0, [3.0, 3.0, 6.0]))
    rot = _rotation(angles) @ np.diag(1.0 / rng.uniform(0.92, 1.08, size=3))
    shift = rng.normal(0.0, 4.0, size=3)  # mm
    # Coarse elastic field: ~40 mm control spacing, 2.5 mm rms, interpolated to the output grid.
    coarse = rng.standard_normal((3, 7, 7, 5)).astype(np.float32) * 2.5
    coords = np.empty((3, *shape), dtype=np.float32)
    for k in range(3):
        coords[k] = ndimage.zoom(coarse[k], np.asarray(shape) / coarse.shape[1:], order=1, grid_mode=True, mode="nearest")
        coords[k] += centre[k] + shift[k]
        for j in range(3):
            if rot[k, j] != 0:
                coords[k] += rot[k, j] * axes[j].reshape([-1 if a == j else 1 for a in range(3)])
    return coords


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _bias_field(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative bias `exp(b)`, b a random quadratic in normalised coordinates (about +-15 %)."""
    u = [np.linspace(-1, 1, n, dtype=np.float32).reshape([-1 if a == k else 1 for a in range(3)]) for k, n in enumerate(shape)]
    terms = [u[0], u[1], u[2], u[0] * u[1], u[0] * u[2], u[1] * u[2], u[0] ** 2, u[1] ** 2, u[2] ** 2]
    coef = rng.normal(0.0, 0.06, size=len(terms))
    b = np.zeros(shape, dtype=np.float32)
    for c, t in zip(coef, terms):
        b += np.float32(c) * t
    return np.exp(b, out=b)


def synth_flair_subject(
    seed: int, *, shape: tuple[int, int, int] = BRATS_SHAPE, with_labels: bool = False,
    contrasts: tuple[str, ...] = ("flair",),
) -> FlairSubject:
    """Draw one FLAIR-like subject, and the same subject in the other `contrasts` ("t1", "t2");
    `with_labels` also returns warped hard tissue labels (for tests)."""
    unknown = set(contrasts) - set(CONTRASTS)
    if unknown:
        raise ValueError(f"unknown contrasts {sorted(unknown)}; expected some of {list(CONTRASTS)}")
    shape = tuple(int(n) for n in shape)
    rng = np.random.default_rng(seed)
    # each other contrast draws from its own generator, so a subject's T1 is the same whichever
    # contrasts are asked for, and FLAIR's draws are those of a FLAIR-only subject
    other_rngs = {name: np.random.default_rng([seed, CONTRASTS.index(name)]) for name in contrasts if name != "flair"}
    csf, gm, wm, seeds = _tissue_maps()
    c_wm = rng.uniform(0.45, 0.55)
    c_gm = c_wm * rng.uniform(1.3, 1.5)
    c_csf = c_wm * rng.uniform(0.05, 0.15)
    images = {"flair": c_csf * csf + c_wm * wm + c_gm * gm}
    for name in (c for c in CONTRASTS if c in contrasts and c != "flair"):
        r = {k: other_rngs[name].uniform(*_RATIOS[name][k]) for k in ("csf", "gm")}
        images[name] = c_wm * (r["csf"] * csf + wm + r["gm"] * gm)
    # Mild tissue texture (~3 mm grain, +-4 %) so flat regions are not perfectly smooth.
    texture = ndimage.zoom(rng.standard_normal((40, 47, 38)).astype(np.float32), np.divide(csf.shape, (40, 47, 38)), order=1, grid_mode=True, mode="nearest")
    for image in images.values():
        image *= 1.0 + 0.04 * texture
    labels = None
    if with_labels:
        labels = np.full(csf.shape, OTHER, dtype=np.uint8)
        for label, prob in ((CSF, csf), (GM, gm), (WM, wm)):
            labels[prob > PURE_TISSUE] = label
    lesions = _draw_lesions(rng, csf.shape, wm + 0.5 * gm, seeds)
    for name, image in images.items():
        ratios = ([(lesion.edema_ratio, lesion.core_ratio) for lesion in lesions] if name == "flair" else
                  [(other_rngs[name].uniform(*_RATIOS[name]["edema"]), other_rngs[name].uniform(*_RATIOS[name]["core"]))
                   for _ in lesions])
        _paint_lesions(image, lesions, c_wm, ratios)
    if labels is not None:
        _label_lesions(labels, lesions)

    brain_centre = np.array([98.0, 117.0, 77.0])  # template voxel at the brain's bounding-box centre
    coords = _sampling_coordinates(shape, rng, brain_centre)
    volumes = {name: ndimage.map_coordinates(image, coords, order=1, mode="constant", cval=0.0, prefilter=False)
               for name, image in images.items()}
    warped_labels = None
    if labels is not None:
        warped_labels = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0)
    del coords, images
    bias = _bias_field(shape, rng)
    for name, volume in volumes.items():
        volume *= bias
        noise_rng = rng if name == "flair" else other_rngs[name]
        sigma = np.float32(c_wm * noise_rng.uniform(0.015, 0.035))
        real = volume + sigma * noise_rng.standard_normal(shape, dtype=np.float32)
        imag = sigma * noise_rng.standard_normal(shape, dtype=np.float32)
        volumes[name] = np.hypot(real, imag, out=real).astype(np.float32, copy=False)
    spacing = tuple(float(v) for v in FOV_MM / np.asarray(shape))
    flair = volumes.pop("flair")
    return FlairSubject(volume=flair, labels=warped_labels, spacing=spacing,
                        others={c: volumes[c] for c in contrasts if c != "flair"})


def synth_flair_volume(seed: int, *, shape: tuple[int, int, int] = BRATS_SHAPE) -> np.ndarray:
    """FLAIR-like float32 volume (x, y, z) over the 240 x 240 x 155 mm BraTS field of view."""
    return synth_flair_subject(seed, shape=shape).volume


def subject_seeds(seed: int, n_subjects: int) -> list[int]:
    """The seeds of synthetic subjects 1..n_subjects (`BraTS20_Training_NNN`), spawned from `seed`."""
    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(n_subjects)]


def write_synthetic_brats(
    out_root: str | os.PathLike, *, n_subjects: int, seed: int,
    shape: tuple[int, int, int] = BRATS_SHAPE, contrasts: tuple[str, ...] = ("flair",),
) -> list[Path]:
    """Write `n_subjects` subjects in the BraTS 2020 layout; subject seeds spawn from `seed` (SeedSequence).

    Files: `out_root/MICCAI_BraTS2020_TrainingData/BraTS20_Training_NNN/BraTS20_Training_NNN_<contrast>.nii.gz`
    for each of `contrasts` ("flair" always). Returns the FLAIR files.
    """
    paths = []
    for i, child_seed in enumerate(tqdm(subject_seeds(seed, n_subjects), desc="synthetic subjects", unit="subject"), start=1):
        subject = synth_flair_subject(child_seed, shape=shape, contrasts=tuple(contrasts))
        name = f"BraTS20_Training_{i:03d}"
        folder = Path(out_root) / BRATS_DATA_DIR / name
        paths.append(write_volume(folder / f"{name}_flair.nii.gz", subject.volume, spacing=subject.spacing))
        for contrast, volume in subject.others.items():
            write_volume(folder / f"{name}_{contrast}.nii.gz", volume, spacing=subject.spacing)
    return paths
