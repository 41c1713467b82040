"""Reading measured 4D-STEM data: the patterns and whatever calibration the file records.

`read_measurement` returns a 4D float32 array (scan rows, scan columns, detector rows, detector
columns) and the file's metadata as `physdiff.data.stem_measured.STEMMetadata` keys:

- `.npy`: the array alone;
- `.h5`, `.hdf5`, `.emd` in EMD 1.0 (Berkeley; py4DSTEM's and emdfile's format): the 4D array
  node, with the scan step and detector pixel of py4DSTEM's root `calibration` (or the node's
  dimension vectors), read with `emdfile` (pip extra `stem-io`; py4DSTEM itself is not needed);
- `.emd` (Velox), `.mib`, `.dm3`, `.dm4`, `.hspy`: RosettaSciIO (pip extra `stem-io`), with the
  axes' scales and the beam energy and convergence angle where the file's metadata holds them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from physdiff.errors import InputError, MissingExtraError

EMD1_SUFFIXES = (".h5", ".hdf5", ".emd")
RSCIIO_READERS = {".emd": "emd", ".mib": "quantumdetector", ".dm3": "digitalmicrograph",
                  ".dm4": "digitalmicrograph", ".hspy": "hspy"}
SUFFIXES = (".npy", *EMD1_SUFFIXES, *RSCIIO_READERS)
# lengths to Å, reciprocal lengths to 1/Å, angles to mrad (as files spell them)
_LENGTH = {"a": 1.0, "å": 1.0, "angstrom": 1.0, "nm": 10.0, "pm": 0.01, "um": 1e4, "µm": 1e4}
_RECIPROCAL = {"a^-1": 1.0, "1/a": 1.0, "1/å": 1.0, "å^-1": 1.0, "nm^-1": 0.1, "1/nm": 0.1}
_ANGLE = {"mrad": 1.0, "rad": 1e3}


def is_number(v) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_positive(v) -> bool:
    """A finite real number above 0."""
    return is_number(v) and v > 0



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
        return np.load(path, allow_pickle=False, mmap_mode="r"), {}  # only the region read is loaded
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
    if is_positive(tem.get("beam_energy")):
        calibration["energy"] = float(tem["beam_energy"]) * 1e3  # keV
    if is_positive(tem.get("convergence_angle")):
        calibration["semiangle"] = float(tem["convergence_angle"])
    return np.asarray(signal["data"]), calibration


def read_measurement(path: str | Path, *, dataset: str | None = None, scan_shape: tuple[int, int] | None = None,
                     region: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, dict]:
    """(patterns (scan rows, scan columns, detector rows, detector columns) float32, the metadata
    the file records as `STEMMetadata` keys). A 3D stack of frames is reshaped to `scan_shape`;
    `region` (r0, r1, c0, c1) keeps scan rows r0..r1-1 and columns c0..c1-1 (of a .npy, only
    those are read into memory)."""
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
    if region is not None:
        r0, r1, c0, c1 = region
        if not (0 <= r0 < r1 <= data.shape[0] and 0 <= c0 < c1 <= data.shape[1]):
            raise InputError(f"scan region {r0} {r1} {c0} {c1}: outside the {data.shape[0]} x {data.shape[1]} scan "
                             f"of {path}")
        data = data[r0:r1, c0:c1]
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputError(f"{path}: expected real intensities, got dtype {data.dtype}")
    data = np.array(data, np.float32)  # a copy: of a memory-mapped .npy, the region alone
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
