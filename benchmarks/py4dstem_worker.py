"""Run py4DSTEM's multislice ptychography on one exported 4D-STEM sample (runs in .venv-py4dstem).

    .venv-py4dstem/bin/python benchmarks/py4dstem_worker.py IN.npz OUT.npz

Imports only numpy and py4DSTEM, because py4DSTEM 0.14.18 needs numpy < 2 and so lives in a
virtualenv of its own (benchmarks/py4dstem_env.sh). benchmarks/py4dstem_check.py writes IN.npz
(`export_sample`) and reads OUT.npz; every conversion to py4DSTEM's conventions is made there,
in our venv, where it is tested. IN.npz holds:

    intensities  float32 (P, H, W)  patterns on the full simulation grid, corner-centred
                                    (unshifted FFT order); pixels off the detector are 0
    fourier_mask bool (H, W)        True on the detector's pixels: the others are left free
    probe        complex64 (H, W)   the known probe in real space, corner-centred, at r = 0
    positions    float64 (P, 2)     probe positions, Å from pixel 0 (scan order of intensities)
    extent       float64 (2,)       the periodic cell, Å; sampling = extent / (H, W)
    energy (eV), slice_thickness (S,) Å, scan_shape (2,), settings (a JSON string)
    initial_phases float32 (S, H, W), optional: the start, phase per slice in rad (default 0)

OUT.npz holds `phases` float32 (S, H, W), the phase each slice imparts (rad; for
object_type "complex" the angle of the transmission), `errors` (one per iteration),
`seconds` (preprocess + reconstruct, without imports) and, with settings["store_iterations"],
`phases_iterations` float32 (n_iter, S, H, W).

The object is the whole periodic cell on the simulation grid with no padding (an initial object
of shape (S, H, W), object_padding_px = 0): py4DSTEM indexes object patches modulo the object's
shape, so with a probe window as large as the cell this is the same periodic model as the
simulation's.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from py4DSTEM import DataCube
from py4DSTEM.process.phase import MultislicePtychography
from py4DSTEM.process.utils import electron_wavelength_angstrom


class _CellPtychography(MultislicePtychography):
    """MultislicePtychography with a reciprocal pixel of its own along each axis.

    A DataCube holds one Q pixel size, but a supercell that is not square has a different
    1 / extent along x and y; py4DSTEM's internals already keep one sampling per axis.
    """

    def __init__(self, *args, extent, **kwargs):
        self._cell_extent = tuple(float(e) for e in extent)
        super().__init__(*args, **kwargs)

    def _extract_intensities_and_calibrations_from_datacube(self, datacube, *args, **kwargs):
        intensities = super()._extract_intensities_and_calibrations_from_datacube(datacube, *args, **kwargs)
        wavelength = electron_wavelength_angstrom(self._energy)
        self._reciprocal_sampling = tuple(1 / e for e in self._cell_extent)
        self._angular_sampling = tuple(1e3 * wavelength / e for e in self._cell_extent)
        return intensities


def phases_of(obj: np.ndarray, object_type: str) -> np.ndarray:
    """Per-slice phase (rad) of a py4DSTEM object: the potential itself, or the complex angle."""
    return np.asarray(obj if object_type == "potential" else np.angle(obj), dtype=np.float32)


def run(inp: dict) -> dict:
    settings = json.loads(str(inp["settings"]))
    object_type = settings.get("object_type", "potential")
    intensities = np.asarray(inp["intensities"], np.float32)
    scan_shape = tuple(int(n) for n in inp["scan_shape"])
    gpts = intensities.shape[-2:]
    extent = np.asarray(inp["extent"], float)
    thickness = np.asarray(inp["slice_thickness"], float)
    datacube = DataCube(data=intensities.reshape(*scan_shape, *gpts))
    datacube.calibration.set_R_pixel_size(float(extent[0] / scan_shape[0]))
    datacube.calibration.set_R_pixel_units("A")
    datacube.calibration.set_Q_pixel_size(float(1 / extent[0]))  # _CellPtychography sets both axes
    datacube.calibration.set_Q_pixel_units("A^-1")

    # the start is always ours (default V = 0, py4DSTEM's own): its shape is the grid's, where
    # py4DSTEM's ceil(object_fov_ang / sampling) can round 64 up to 65
    phases = np.asarray(inp["initial_phases"], np.float32) if "initial_phases" in inp \
        else np.zeros((len(thickness), *gpts), np.float32)
    initial = phases if object_type == "potential" else np.exp(1j * phases).astype(np.complex64)

    np.random.seed(int(settings.get("seed", 0)))  # py4DSTEM shuffles the positions with numpy's global state
    start = time.perf_counter()
    ptycho = _CellPtychography(
        energy=float(inp["energy"]), num_slices=len(thickness), slice_thicknesses=thickness[:-1],
        datacube=datacube, initial_probe_guess=np.asarray(inp["probe"], np.complex64),
        initial_scan_positions=np.asarray(inp["positions"], float), object_padding_px=(0, 0), object_type=object_type, initial_object_guess=initial, extent=extent,
        verbose=False, device="cpu",
    ).preprocess(
        # the patterns are already corner-centred: no shift, no rotation, no transpose
        force_com_shifts=(np.zeros(scan_shape), np.zeros(scan_shape)), force_com_rotation=0.0,
        force_com_transpose=False, center_positions_in_fov=False, object_fov_mask=True,
        plot_center_of_mass=False, plot_rotation=False, plot_probe_overlaps=False,
    )
    store = bool(settings.get("store_iterations", False))
    ptycho.reconstruct(
        num_iter=int(settings["num_iter"]), reconstruction_method="gradient-descent",
        step_size=float(settings["step_size"]), max_batch_size=settings.get("max_batch_size"),
        seed_random=int(settings.get("seed", 0)), fix_probe=True, fix_positions=True,
        object_positivity=bool(settings.get("positivity", True)),
        detector_fourier_mask=np.asarray(inp["fourier_mask"], bool),
        store_iterations=store, progress_bar=False,
    )
    seconds = time.perf_counter() - start
    out = {"phases": phases_of(ptycho.object, object_type), "errors": np.asarray(ptycho.error_iterations, float),
           "seconds": np.float64(seconds)}
    if store:
        out["phases_iterations"] = np.stack([phases_of(o, object_type) for o in ptycho.object_iterations])
    return out


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    with np.load(sys.argv[1], allow_pickle=False) as data:
        inp = {k: data[k] for k in data.files}
    np.savez(sys.argv[2], **run(inp))


if __name__ == "__main__":
    main()
