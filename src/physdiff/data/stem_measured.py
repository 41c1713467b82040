"""Measured 4D-STEM data without a ground truth: its metadata, its geometry, its patterns.

`STEMMetadata` holds the probe, scan and slicing (units: eV, mrad, Å), read from a `--metadata`
YAML file by `load_metadata` (files: `physdiff.data.stem_files`); `geometry_from_metadata` turns
it into the `MultisliceGeometry` of a periodic cell whose extent the detector pixel sets
(extent = wavelength / pixel angle), and `prepare_patterns` crops the patterns around the
direct beam to the detector that geometry models and puts them in units of the incident beam.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from physdiff.data.stem_files import is_number, is_positive
from physdiff.errors import InputError
from physdiff.physics.multislice import MultisliceGeometry


@dataclasses.dataclass(frozen=True)
class STEMMetadata:
    """Probe, scan and slicing of a measurement; the keys of the `--metadata` YAML file.

    energy: eV; semiangle: probe convergence semi-angle, mrad; defocus: Å (abTEM's sign,
    defocus = -C10; 0 focuses on the entrance surface); scan_step: Å between scan positions,
    one number or [rows, columns]; detector_pixel: one detector pixel, one number or
    [rows, columns], in `detector_unit` (mrad, or 1/A for a reciprocal length);
    slice_thickness: Å per slice; n_slices: slices of the reconstructed potential.
    """

    energy: float | None = None
    semiangle: float | None = None
    defocus: float = 0.0
    scan_step: Any = None
    detector_pixel: Any = None
    detector_unit: str = "mrad"
    slice_thickness: float | None = None
    n_slices: int | None = None

    def merged(self, **override) -> "STEMMetadata":
        """A copy with every override that is not None put in place."""
        return dataclasses.replace(self, **{k: v for k, v in override.items() if v is not None})

    def missing(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is None]


KEYS = tuple(f.name for f in dataclasses.fields(STEMMetadata))


def load_metadata(path: str | Path) -> dict:
    """Read a `--metadata` YAML file into a dict of `STEMMetadata` keys, checking each key."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: metadata file not found (expected YAML with keys {', '.join(KEYS)})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InputError(f"{path}: not valid YAML ({getattr(err, 'problem', None) or err}{where})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of {', '.join(KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise InputError(f"{path}: unknown key(s) {unknown}; expected some of {', '.join(KEYS)} "
                         "(units: eV, mrad, Å; detector_unit mrad or 1/A)")
    for key, value in data.items():
        expected = _expected(key, value)
        if expected:
            raise InputError(f"{path}: key '{key}' = {value!r} is not valid; expected {expected}")
    return data


def _expected(key: str, value: Any) -> str | None:
    """What one metadata value should be, where it is not that (None where it is fine)."""
    if value is None:
        return None
    if key == "detector_unit":
        return None if value in ("mrad", "1/A") else "mrad or 1/A"
    if key in ("scan_step", "detector_pixel"):
        pair = isinstance(value, list) and len(value) == 2 and all(is_positive(v) for v in value)
        return None if is_positive(value) or pair else "a positive number or [rows, columns]"
    if key == "n_slices":
        return None if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else "a positive integer"
    if key == "defocus":
        return None if is_number(value) else "a number (Å)"
    return None if is_positive(value) else "a positive number"


def _pair(value, name: str) -> tuple[float, float]:
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else (value, value))]
    if len(values) != 2 or not all(is_positive(v) for v in values):
        raise InputError(f"{name}: expected a positive number or two (rows, columns), got {value!r}")
    return values[0], values[1]


def wavelength_sigma(energy: float) -> tuple[float, float]:
    """Relativistic electron wavelength (Å) and interaction constant (rad / (V·Å)) at `energy` eV (abTEM's)."""
    from abtem.core.energy import energy2sigma, energy2wavelength

    return float(energy2wavelength(energy)), float(energy2sigma(energy))


def geometry_from_metadata(meta: STEMMetadata, scan_shape: tuple[int, int], *, gpts: int,
                           max_angle: str = "valid", where: str = "metadata") -> MultisliceGeometry:
    """The periodic cell, probe and scan of a measurement on a `gpts` x `gpts` potential grid.

    The detector pixel d (mrad) fixes the cell: extent = 1e3 wavelength / d (Å), sampling =
    extent / gpts. The scan starts at pixel 0 with `scan_step`; it must fit in the cell, which
    the forward model takes as periodic. `where` names the source in error messages.
    """
    missing = meta.missing()
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}; give them in the --metadata YAML or as options "
                         "(energy eV, semiangle mrad, scan_step Å, detector_pixel mrad or 1/A, slice_thickness Å, "
                         "n_slices)")
    wavelength, sigma = wavelength_sigma(float(meta.energy))
    pixel = _pair(meta.detector_pixel, "detector_pixel")
    if meta.detector_unit == "1/A":
        pixel = tuple(1e3 * wavelength * k for k in pixel)
    extent = tuple(1e3 * wavelength / d for d in pixel)
    sampling = tuple(e / gpts for e in extent)
    step = _pair(meta.scan_step, "scan_step")
    for axis, (n, s, e) in enumerate(zip(scan_shape, step, extent)):
        if n * s > e * (1 + 1e-6):
            raise InputError(
                f"{where}: the scan spans {n} x {s:g} Å = {n * s:.2f} Å along {('rows', 'columns')[axis]}, more than "
                f"the {e:.2f} Å cell that a {pixel[axis]:.3g} mrad detector pixel gives (1e3 wavelength / pixel); "
                f"reconstruct at most {int(e / s)} positions (--scan-region) or use a finer detector pixel")
    cutoff = gpts * min(pixel) / 3  # the antialias limit, 2/3 of Nyquist, in mrad
    if cutoff <= float(meta.semiangle):
        raise InputError(f"{where}: a {gpts}-point grid with {min(pixel):.3g} mrad detector pixels reaches "
                         f"{cutoff:.1f} mrad, not past the {meta.semiangle} mrad probe; use a larger --gpts")
    positions = np.stack(np.meshgrid(np.arange(scan_shape[0]) * step[0], np.arange(scan_shape[1]) * step[1],
                                     indexing="ij"), axis=-1)
    geometry = MultisliceGeometry(energy=float(meta.energy), semiangle=float(meta.semiangle),
                                  defocus=float(meta.defocus), sampling=sampling, gpts=(gpts, gpts),
                                  slice_thickness=(float(meta.slice_thickness),) * int(meta.n_slices), sigma=sigma,
                                  wavelength=wavelength, positions=positions, max_angle=max_angle)
    reach = min((n // 2) * d for n, d in zip(geometry.detector_gpts, pixel))
    if reach <= float(meta.semiangle):
        raise InputError(f"{where}: the modelled detector ({max_angle}, {geometry.detector_gpts[0]} pixels) reaches "
                         f"{reach:.1f} mrad, inside the {meta.semiangle} mrad bright field; use a larger --gpts "
                         "or --max-angle cutoff")
    return geometry


def prepare_patterns(data: np.ndarray, geometry: MultisliceGeometry, *, center: str = "com",
                     normalize: str = "mean", where: str = "data") -> tuple[np.ndarray, dict]:
    """Patterns cropped to the modelled detector around the direct beam, in units of the beam.

    `center` "com": the centre of mass of the mean pattern, to the nearest pixel; "middle": pixel
    n // 2 (where an fftshifted pattern has k = 0). `normalize` "mean": divided by the mean total
    of the whole patterns, so each sums to about 1 as the forward model's do (it neglects what
    falls past the detector); "none": kept as they are (data already in units of the beam, as
    physdiff's simulations write). Negative values (dark-noise) are set to 0. Returns
    (patterns (Nx, Ny, *geometry.detector_gpts) float32, what was done).
    """
    data = np.asarray(data, np.float32)
    mean = data.mean(axis=(0, 1))
    if center == "com":
        total = float(mean.sum())
        if not total > 0:
            raise InputError(f"{where}: the mean pattern holds no intensity; cannot find the direct beam")
        grids = np.meshgrid(*(np.arange(n) for n in mean.shape), indexing="ij")
        middle = tuple(int(round(float((g * mean).sum()) / total)) for g in grids)
    elif center == "middle":
        middle = tuple(n // 2 for n in mean.shape)
    else:
        raise InputError(f"center: expected 'com' or 'middle', got {center!r}")
    det = geometry.detector_gpts
    lo = [c - d // 2 for c, d in zip(middle, det)]
    if any(a < 0 or a + d > n for a, d, n in zip(lo, det, mean.shape)):
        raise InputError(
            f"{where}: the model's detector needs {det[0]} x {det[1]} pixels around the direct beam at {middle}, the "
            f"patterns have {mean.shape[0]} x {mean.shape[1]}; a baseline can take a smaller --gpts (the detector "
            f"spans about 0.47 gpts pixels with --max-angle valid, more with cutoff or full), the prior methods need "
            f"the grid they were trained on")
    scale = 1.0
    if normalize == "mean":
        scale = float(data.sum(axis=(2, 3)).mean())
        if not scale > 0:
            raise InputError(f"{where}: the patterns hold no intensity to normalise by")
    elif normalize != "none":
        raise InputError(f"normalize: expected 'mean' or 'none', got {normalize!r}")
    crop = data[:, :, lo[0]:lo[0] + det[0], lo[1]:lo[1] + det[1]] / np.float32(scale)
    negative = int((crop < 0).sum())
    return np.maximum(crop, 0).astype(np.float32), {"center": middle, "scale": scale, "negative": negative,
                                                    "detector": tuple(det), "measured": tuple(mean.shape)}

