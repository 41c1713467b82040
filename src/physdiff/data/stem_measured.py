"""Measured 4D-STEM data without a ground truth: the patterns, their metadata, and the geometry.

`read_measurement` reads a 4D array (scan rows, scan columns, detector rows, detector columns)
and whatever calibration the file records:

- `.npy`: the array alone;
- `.h5`, `.hdf5`, `.emd` in EMD 1.0 (Berkeley; py4DSTEM's and emdfile's format): the 4D array
  node, with the scan step and detector pixel of py4DSTEM's root `calibration` (or the node's
  dimension vectors), read with `emdfile` (pip extra `stem-io`; py4DSTEM itself is not needed);
- `.emd` (Velox), `.mib`, `.dm3`, `.dm4`, `.hspy`: RosettaSciIO (pip extra `stem-io`), with the
  axes' scales and the beam energy and convergence angle where the file's metadata holds them.

`STEMMetadata` holds the probe, scan and slicing (units: eV, mrad, Å); `geometry_from_metadata`
turns it into the `MultisliceGeometry` of a periodic cell whose extent the detector pixel sets
(extent = wavelength / pixel angle), and `prepare_patterns` crops the patterns around the
direct beam to the detector that geometry models and puts them in units of the incident beam.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from physdiff.errors import InputError, MissingExtraError
from physdiff.physics.multislice import MultisliceGeometry

EMD1_SUFFIXES = (".h5", ".hdf5", ".emd")
RSCIIO_READERS = {".emd": "emd", ".mib": "quantumdetector", ".dm3": "digitalmicrograph",
                  ".dm4": "digitalmicrograph", ".hspy": "hspy"}
SUFFIXES = (".npy", *EMD1_SUFFIXES, *RSCIIO_READERS)
# lengths to Å, reciprocal lengths to 1/Å, angles to mrad (as files spell them)
_LENGTH = {"a": 1.0, "å": 1.0, "angstrom": 1.0, "nm": 10.0, "pm": 0.01, "um": 1e4, "µm": 1e4}
_RECIPROCAL = {"a^-1": 1.0, "1/a": 1.0, "1/å": 1.0, "å^-1": 1.0, "nm^-1": 0.1, "1/nm": 0.1}
_ANGLE = {"mrad": 1.0, "rad": 1e3}


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
        pair = isinstance(value, list) and len(value) == 2 and all(_positive(v) for v in value)
        return None if _positive(value) or pair else "a positive number or [rows, columns]"
    if key == "n_slices":
        return None if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else "a positive integer"
    if key == "defocus":
        return None if _number(value) else "a number (Å)"
    return None if _positive(value) else "a positive number"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v) -> bool:
    return _number(v) and v > 0


def _pair(value, name: str) -> tuple[float, float]:
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else (value, value))]
    if len(values) != 2 or not all(_positive(v) for v in values):
        raise InputError(f"{name}: expected a positive number or two (rows, columns), got {value!r}")
    return values[0], values[1]


def _unit(units: Any, table: dict) -> float | None:
    key = str(units).strip().lower().replace(" ", "").replace("angstrom", "a")
    return table.get(key, table.get(key.replace("å", "a")))


def _calibration(step: tuple | None, step_units, pixel: tuple | None, pixel_units) -> dict:
    """Scan step (Å) and detector pixel (mrad or 1/A) of a file, where its units say what they are."""
    out: dict[str, Any] = {}
    if step is not None and (f := _unit(step_units, _LENGTH)):
        out["scan_step"] = [float(s) * f for s in step]
    if pixel is not None:
        if f := _unit(pixel_units, _RECIPROCAL):
            out.update(detector_pixel=[float(p) * f for p in pixel], detector_unit="1/A")
        elif f := _unit(pixel_units, _ANGLE):
            out.update(detector_pixel=[float(p) * f for p in pixel], detector_unit="mrad")
    return out


def _read_npy(path: Path) -> tuple[np.ndarray, dict]:
    try:
        return np.load(path, allow_pickle=False), {}
    except (OSError, ValueError, EOFError) as err:
        raise InputError(f"{path}: cannot read as .npy ({err})") from None


def _read_emd1(path: Path, dataset: str | None) -> tuple[np.ndarray, dict]:
    """The 4D array node of an EMD 1.0 file and py4DSTEM's calibration of it."""
    try:
        import emdfile
        import h5py
    except ImportError:
        raise MissingExtraError("emdfile", "stem-io", f"reading {path} (EMD 1.0)") from None
    with h5py.File(path, "r") as f:
        found = []
        f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Group)
                     and str(obj.attrs.get("emd_group_type", "")) == "array" and "data" in obj
                     and obj["data"].ndim == 4 else None)
        if dataset is not None:
            found = [name for name in found if name.strip("/") == dataset.strip("/")]
        if len(found) != 1:
            raise InputError(f"{path}: expected one 4D array node{f' named {dataset}' if dataset else ''}, found "
                             f"{found or 'none'}; choose one with --dataset")
        group = f[found[0]]
        try:  # emdfile's own reader for the node; py4DSTEM's DataCube is an emdfile Array
            array = emdfile.Array.from_h5(group)
        except Exception as err:  # emdfile raises bare Exceptions and AssertionErrors on bad nodes
            raise InputError(f"{path}: node {found[0]} is not a readable EMD array ({err})") from None
        data = np.asarray(array.data)
        steps = [float(d[1] - d[0]) if len(d) > 1 else None for d in array.dims]
        calibration = _calibration(steps[:2] if None not in steps[:2] else None, array.dim_units[0],
                                   steps[2:] if None not in steps[2:] else None, array.dim_units[2])
        bundle = f[found[0].split("/")[0]].get("metadatabundle")
        if bundle is not None and "calibration" in bundle:  # py4DSTEM's calibration: it wins over dims
            c = emdfile.Metadata.from_h5(bundle["calibration"])
            get = lambda key: c._params.get(key)  # noqa: E731
            calibration.update(_calibration((get("R_pixel_size"),) * 2 if get("R_pixel_size") else None,
                                            get("R_pixel_units"),
                                            (get("Q_pixel_size"),) * 2 if get("Q_pixel_size") else None,
                                            get("Q_pixel_units")))
    return data, calibration


def _read_rsciio(path: Path, dataset: str | None) -> tuple[np.ndarray, dict]:
    """The 4D signal of a file RosettaSciIO reads, with its axes' scales and beam settings."""
    import importlib

    try:
        reader = importlib.import_module(f"rsciio.{RSCIIO_READERS[path.suffix.lower()]}").file_reader
    except ImportError:
        raise MissingExtraError("rosettasciio", "stem-io", f"reading {path}") from None
    try:
        signals = reader(str(path))
    except Exception as err:  # every reader raises its own types on a corrupt file
        raise InputError(f"{path}: RosettaSciIO cannot read it ({type(err).__name__}: {err})") from None
    found = [s for s in signals if np.ndim(s["data"]) in (3, 4)]
    if dataset is not None:
        found = [s for i, s in enumerate(found) if dataset in (str(i), s["metadata"].get("General", {}).get("title"))]
    if len(found) != 1:
        raise InputError(f"{path}: expected one 3D or 4D signal{f' named {dataset}' if dataset else ''}, found "
                         f"{len(found)}; choose one with --dataset (its index or title)")
    signal, axes = found[0], found[0]["axes"]
    navigate = [bool(a.get("navigate")) for a in axes]
    if navigate != sorted(navigate, reverse=True):
        raise InputError(f"{path}: expected the scan axes before the detector axes, got {[a.get('name') for a in axes]}")
    nav, sig = [a for a in axes if a.get("navigate")], [a for a in axes if not a.get("navigate")]
    calibration = _calibration([a["scale"] for a in nav] if len(nav) == 2 else None, nav[0]["units"] if nav else None,
                               [a["scale"] for a in sig] if len(sig) == 2 else None, sig[0]["units"] if sig else None)
    tem = signal["metadata"].get("Acquisition_instrument", {}).get("TEM", {})
    if _positive(tem.get("beam_energy")):
        calibration["energy"] = float(tem["beam_energy"]) * 1e3  # keV
    if _positive(tem.get("convergence_angle")):
        calibration["semiangle"] = float(tem["convergence_angle"])
    return np.asarray(signal["data"]), calibration


def read_measurement(path: str | Path, *, dataset: str | None = None,
                     scan_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, dict]:
    """(patterns (scan rows, scan columns, detector rows, detector columns) float32, the metadata
    the file records as `STEMMetadata` keys). A 3D stack of frames is reshaped to `scan_shape`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected 4D-STEM data: {', '.join(SUFFIXES)})")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        data, calibration = _read_npy(path)
    elif suffix in EMD1_SUFFIXES and _is_emd1(path):
        data, calibration = _read_emd1(path, dataset)
    elif suffix in RSCIIO_READERS:
        data, calibration = _read_rsciio(path, dataset)
    else:
        raise InputError(f"{path}: unknown 4D-STEM format (expected {', '.join(SUFFIXES)}; .h5/.hdf5 in EMD 1.0)")
    if data.ndim == 3 and scan_shape is not None:
        if int(np.prod(scan_shape)) != data.shape[0]:
            raise InputError(f"{path}: {data.shape[0]} frames cannot form a scan of {scan_shape[0]} x {scan_shape[1]}")
        data = data.reshape(*scan_shape, *data.shape[1:])
    if data.ndim != 4 or min(data.shape[:2]) < 2:
        raise InputError(f"{path}: expected a 4D array (scan rows, scan columns, detector rows, detector columns) "
                         f"with >= 2 positions per scan axis, got shape {data.shape}"
                         + ("; give --scan-shape ROWS COLS for a stack of frames" if data.ndim == 3 else ""))
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputError(f"{path}: expected real intensities, got dtype {data.dtype}")
    data = np.asarray(data, np.float32)
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise InputError(f"{path}: {n_bad} of its values are NaN or infinite; expected finite intensities")
    return data, calibration


def _is_emd1(path: Path) -> bool:
    try:
        import h5py
    except ImportError:
        raise MissingExtraError("emdfile", "stem-io", f"reading {path}") from None
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("emd_group_type", "")) == "file"
    except OSError:
        if path.suffix.lower() == ".emd":
            return False  # not HDF5 at all: RosettaSciIO says what it is
        raise InputError(f"{path}: not an HDF5 file (expected EMD 1.0, as py4DSTEM writes)") from None


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
            f"patterns have {mean.shape[0]} x {mean.shape[1]}; give a smaller --gpts (the detector spans about "
            f"0.47 gpts pixels) or a wider --max-angle")
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

