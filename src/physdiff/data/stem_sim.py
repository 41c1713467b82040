"""Multislice 4D-STEM data with abTEM 1.0: the ground-truth potential and the diffraction patterns.

One sample is a dict of arrays and scalars (the contract with the rest of the pipeline):

    potential        float32 (S, H, W)      projected potential per slice, V·Å, axes (slice, x, y)
    intensities      float32 (Nx, Ny, Kx, Ky) diffraction patterns, fftshifted, cropped per
                                             max_angle, not renormalised (each sums to <= 1)
    bright_field     float32 (Nx, Ny)       sum of each pattern over angles < semiangle
    positions        float64 (Nx, Ny, 2)    probe positions, Å from pixel 0
    energy (eV), semiangle (mrad), defocus (Å), sampling (2,) Å, gpts (2,), extent (2,) Å,
    slice_thickness (S,) Å, sigma rad/(V·Å), wavelength Å, max_angle (str),
    detector_gpts (2,), angular_sampling (2,) mrad, frozen_phonons, dose (e/Å², 0 = noiseless),
    electrons_per_position, seed;
    and the identification keys the caller adds: name, formula, zone_axis (str), spacegroup.

With a dose, `intensities` are Poisson counts divided by the electrons per probe position
(dose x scan step area), so their expectation is the noiseless pattern.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import numpy as np
from ase import Atoms

from physdiff.errors import ConfigError, InputError
from physdiff.io import save_npz

SIM_KEYS = ("potential", "intensities", "bright_field", "positions", "energy", "semiangle", "defocus",
            "sampling", "gpts", "extent", "slice_thickness", "sigma", "wavelength", "max_angle",
            "detector_gpts", "angular_sampling", "frozen_phonons", "dose", "seed")
ID_KEYS = ("name", "formula", "zone_axis", "spacegroup")
_STR_KEYS = ("max_angle", "name", "formula", "zone_axis")
_INT_KEYS = ("frozen_phonons", "seed", "spacegroup")
_FLOAT_KEYS = ("energy", "semiangle", "defocus", "sigma", "wavelength", "dose", "electrons_per_position")


def _largest_prime_factor(n: int) -> int:
    p, largest = 2, 1
    while n > 1 and p * p <= n:
        while n % p == 0:
            largest, n = p, n // p
        p += 1
    return max(largest, n)


def _check_gpts(gpts: int | Sequence[int]) -> tuple[int, int]:
    gpts = (int(gpts), int(gpts)) if np.isscalar(gpts) else tuple(int(g) for g in gpts)
    if len(gpts) != 2 or min(gpts) < 8:
        raise ConfigError(f"gpts={gpts}: expected one or two grid sizes of at least 8")
    for g in gpts:
        if _largest_prime_factor(g) > 7:
            raise ConfigError(f"gpts={g} has the prime factor {_largest_prime_factor(g)}; use sizes whose prime "
                              "factors are 2, 3, 5 or 7 (e.g. 48, 64, 96, 128): FFTs of other sizes run 3-6x slower")
    return gpts


@contextmanager
def _estimated_fft_plans():
    """Plan every FFT inside from scratch (abTEM then estimates them), restoring the caller's wisdom after.

    abTEM's default FFTW_MEASURE picks FFT plans by timing them, so on a busy machine the same
    sample came out different in the last float32 bits (5 of 198 training potentials in the
    timed default run of 2026-11-26), which changed the trained 4D-STEM prior and its tuned
    settings. FFTW_ESTIMATE plans are the same on every run (and no slower here), but FFTW would
    still reuse measured wisdom that earlier work in the process left behind, so that is set
    aside for the simulation.
    """
    try:
        import pyfftw
    except ImportError:  # abTEM falls back to numpy's FFT, which does not plan by timing
        yield
        return
    saved = pyfftw.export_wisdom()
    pyfftw.forget_wisdom()
    try:
        yield
    finally:
        pyfftw.forget_wisdom()
        pyfftw.import_wisdom(saved)


def simulate_4dstem(atoms: Atoms, *, gpts: int | Sequence[int], n_slices: int, energy: float, semiangle: float,
                    defocus: float = 0.0, scan_step: float | None = 0.7, scan_gpts: int | Sequence[int] | None = None,
                    max_angle: str = "valid", frozen_phonons: int = 0, phonon_sigma: float = 0.1,
                    dose: float | None = None, seed: int = 0, device: str = "cpu") -> dict:
    """Simulate a 4D-STEM dataset of an orthogonal cell and return it with its ground-truth potential.

    Units: energy eV, semiangle mrad, defocus Å, scan_step Å (the scan uses the smallest grid
    with a step <= scan_step unless scan_gpts is given), phonon_sigma Å (rms displacement),
    dose e/Å². The cell is cut into exactly `n_slices` equal slices. Rules on the grid: the
    antialias cutoff 2/3 * lambda / (2 max(sampling)) must exceed the semiangle, the detector's
    max angle must cover the bright field, there must be >= 2 scan positions per axis, and each
    lateral extent must be at least 4 Airy radii 0.61 lambda / alpha (so the periodic probe does
    not overlap its own image).
    """
    import abtem
    from abtem.core.energy import energy2sigma, energy2wavelength

    if len(atoms) == 0:
        raise InputError("simulate_4dstem: the structure holds no atoms")
    cell = np.asarray(atoms.cell)
    if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-8 or np.any(np.diag(cell) <= 0):
        raise InputError("simulate_4dstem: the cell must be orthogonal with positive lengths; "
                         "build it with physdiff.data.crystals.orthogonal_supercell")
    gpts = _check_gpts(gpts)
    if int(n_slices) < 1:
        raise ConfigError(f"n_slices={n_slices}: expected a positive integer")
    if max_angle not in ("valid", "cutoff", "full"):
        raise ConfigError(f"max_angle={max_angle!r}: expected 'valid', 'cutoff' or 'full'")
    extent = np.diag(cell)[:2].astype(float)
    thickness = float(cell[2, 2])
    sampling = extent / np.asarray(gpts)
    wavelength, sigma = float(energy2wavelength(energy)), float(energy2sigma(energy))

    cutoff = 2 / 3 * wavelength / (2 * sampling.max()) * 1e3  # mrad
    if cutoff <= semiangle:
        raise InputError(f"grid too coarse: sampling {sampling.max():.3f} Å puts the antialias cutoff at "
                         f"{cutoff:.1f} mrad, below the {semiangle} mrad probe; raise gpts or shrink the cell")
    airy = 0.61 * wavelength / (semiangle * 1e-3)
    if scan_gpts is None:
        if scan_step is None or scan_step <= 0:
            raise ConfigError("give scan_step > 0 (Å) or scan_gpts")
        scan_gpts = tuple(int(math.ceil(e / scan_step - 1e-9)) for e in extent)
    scan_gpts = (int(scan_gpts),) * 2 if np.isscalar(scan_gpts) else tuple(int(g) for g in scan_gpts)
    if min(scan_gpts) < 2 or extent.min() < 4 * airy:
        raise InputError(f"cell too small: extent {extent.round(2).tolist()} Å gives scan {list(scan_gpts)}; "
                         f"need >= 2 positions per axis and >= {4 * airy:.2f} Å (4 Airy radii) per axis")

    slices = (thickness / int(n_slices),) * int(n_slices)
    with _estimated_fft_plans(), abtem.config.set({"dask.lazy": False, "diagnostics.progress_bar": False,
                                                   "fftw.planning_effort": "FFTW_ESTIMATE"}):
        built = abtem.Potential(atoms, gpts=gpts, slice_thickness=slices, projection="infinite",
                                device=device).build()
        probe = abtem.Probe(energy=energy, semiangle_cutoff=semiangle, defocus=defocus, device=device)
        probe.grid.match(built)
        limit = {"valid": probe.rectangle_cutoff_angles, "cutoff": probe.cutoff_angles,
                 "full": probe.full_cutoff_angles}[max_angle]
        if min(limit) <= semiangle:
            raise InputError(f"detector max_angle={max_angle!r} reaches {min(limit):.1f} mrad, which does not "
                             f"cover the {semiangle} mrad bright field; raise gpts or use a wider max_angle")
        scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, gpts=scan_gpts, potential=built)
        if frozen_phonons > 0:
            phonons = abtem.FrozenPhonons(atoms, num_configs=int(frozen_phonons), sigmas=phonon_sigma, seed=seed)
            scattering = abtem.Potential(phonons, gpts=gpts, slice_thickness=slices, projection="infinite",
                                         device=device)
        else:
            scattering = built
        measurement = probe.scan(scattering, scan=scan, detectors=abtem.PixelatedDetector(max_angle=max_angle))
        electrons = 0.0
        if dose:
            electrons = float(dose * np.prod(scan.sampling))
            measurement = measurement.poisson_noise(dose_per_area=dose, seed=seed)
        intensities = np.asarray(measurement.array, dtype=np.float32)
        if dose:
            intensities = intensities / np.float32(electrons)
        alpha_x, alpha_y = (np.asarray(c, dtype=float) for c in measurement.angular_coordinates)
        angular_sampling = np.asarray(measurement.angular_sampling, dtype=float)

    inside = np.hypot(alpha_x[:, None], alpha_y[None, :]) < semiangle
    return {
        "potential": np.asarray(built.array, dtype=np.float32),
        "intensities": intensities,
        "bright_field": intensities[..., inside].sum(-1, dtype=np.float64).astype(np.float32),
        "positions": np.asarray(scan.get_positions(), dtype=np.float64),
        "energy": float(energy), "semiangle": float(semiangle), "defocus": float(defocus),
        "sampling": np.asarray(built.sampling, dtype=float), "gpts": np.asarray(gpts, dtype=int),
        "extent": extent, "slice_thickness": np.asarray(built.slice_thickness, dtype=float),
        "sigma": sigma, "wavelength": wavelength, "max_angle": str(max_angle),
        "detector_gpts": np.asarray(intensities.shape[-2:], dtype=int), "angular_sampling": angular_sampling,
        "frozen_phonons": int(frozen_phonons), "dose": float(dose or 0.0),
        "electrons_per_position": electrons, "seed": int(seed),
    }


def simulate_crystal(entry, *, zone_axis: str, offset: tuple[float, float] = (0.0, 0.0),
                     min_extent: tuple[float, float] = (10.0, 10.0), min_thickness: float = 15.0, **sim) -> dict:
    """Build the zone-axis supercell of a CrystalEntry, simulate it, and add the identification keys."""
    from physdiff.data.crystals import orthogonal_supercell

    atoms = orthogonal_supercell(entry.atoms(), zone_axis=zone_axis, min_extent=min_extent,
                                 min_thickness=min_thickness, offset=offset)
    sample = simulate_4dstem(atoms, **sim)
    sample.update(name=entry.name, formula=entry.formula, zone_axis=str(zone_axis), spacegroup=int(entry.spacegroup))
    return sample


def phase_projection(sample: Mapping) -> np.ndarray:
    """Projected phase sum_s sigma V_s (rad), shape (H, W): what the 4D-STEM scores compare."""
    return float(sample["sigma"]) * np.asarray(sample["potential"], dtype=np.float64).sum(0)


def _validate(sample: Mapping, where: str) -> None:
    for key in SIM_KEYS + ID_KEYS:
        if key not in sample:
            raise InputError(f"{where}: missing key {key!r}; a 4D-STEM sample needs {', '.join(SIM_KEYS + ID_KEYS)}")
    for key in ("potential", "intensities", "bright_field", "positions", "slice_thickness", "sampling"):
        if not np.all(np.isfinite(np.asarray(sample[key], dtype=float))):
            raise InputError(f"{where}: key {key!r} holds NaN or infinite values")
    pot, inten = np.shape(sample["potential"]), np.shape(sample["intensities"])
    checks = [
        (len(pot) == 3 and tuple(pot[1:]) == tuple(np.asarray(sample["gpts"]).tolist()), "potential", "(S, *gpts)"),
        (np.shape(sample["slice_thickness"]) == pot[:1], "slice_thickness", f"({pot[0] if pot else '?'},)"),
        (len(inten) == 4 and tuple(inten[2:]) == tuple(np.asarray(sample["detector_gpts"]).tolist()),
         "intensities", "(Nx, Ny, *detector_gpts)"),
        (np.shape(sample["bright_field"]) == inten[:2], "bright_field", f"{inten[:2]}"),
        (np.shape(sample["positions"]) == (*inten[:2], 2), "positions", f"({', '.join(map(str, inten[:2]))}, 2)"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise InputError(f"{where}: key {key!r} has shape {np.shape(sample[key])}, expected {expected}")


def save_sample(path: str | os.PathLike, sample: Mapping) -> None:
    """Write a sample atomically to `.npz` (strings as 0-d arrays; no pickles)."""
    _validate(sample, f"sample for {path}")
    arrays = {k: np.asarray(v, dtype=str) if k in _STR_KEYS else np.asarray(v) for k, v in sample.items()}
    save_npz(path, **arrays)


def load_sample(path: str | os.PathLike) -> dict:
    """Read a sample written by `save_sample`, checking keys, NaNs and shapes."""
    try:
        with np.load(path, allow_pickle=False) as data:
            sample = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise InputError(f"4D-STEM sample {path} could not be read as .npz: {err}") from err
    _validate(sample, f"4D-STEM sample {path}")
    for key in list(sample):
        if key in _STR_KEYS:
            sample[key] = str(sample[key])
        elif key in _INT_KEYS:
            sample[key] = int(sample[key])
        elif key in _FLOAT_KEYS:
            sample[key] = float(sample[key])
    return sample


def _item_rng(seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), *(zlib.crc32(p.encode()) for p in parts)])


def stem_sample_plan(entries: Sequence, *, zone_axes: Sequence[str], offsets_per_axis: int, seed: int) -> list[dict]:
    """Enumerate distinct (crystal, zone axis, lateral offset) samples.

    The first offset of each (crystal, axis) is (0, 0); the others are uniform fractions of the
    orthogonal repeat unit, seeded per (seed, crystal, axis) so a plan does not depend on the
    order of `entries`. Each item also carries a simulation seed and a `sample_id` for file names.
    """
    if offsets_per_axis < 1:
        raise ConfigError(f"offsets_per_axis={offsets_per_axis}: expected >= 1")
    plan = []
    for entry in entries:
        name = getattr(entry, "name", entry)
        for axis in zone_axes:
            axis = str(axis)
            rng = _item_rng(seed, name, axis)
            offsets = [(0.0, 0.0)] + [tuple(np.round(rng.random(2), 4).tolist()) for _ in range(offsets_per_axis - 1)]
            for k, offset in enumerate(offsets):
                plan.append({"name": name, "zone_axis": axis, "offset": offset,
                             "seed": int(rng.integers(2**31)), "sample_id": f"{name}_{axis}_{k}"})
    return plan


def split_crystals(names: Sequence[str], *, fractions: Mapping[str, float], seed: int,
                   force_test: Sequence[str] = ("CoPt3", "Tb3InC")) -> dict[str, list[str]]:
    """Split crystal names into disjoint sets (e.g. train/val/test) so test crystals are unseen.

    Counts follow `fractions` by largest remainder; names in `force_test` that are present go
    to "test" (growing it if needed). Deterministic in (set of names, fractions, seed).
    """
    total = sum(fractions.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6) or min(fractions.values()) < 0:
        raise ConfigError(f"split fractions {dict(fractions)} must be non-negative and sum to 1")
    names = sorted(set(names))
    forced = [n for n in names if n in set(force_test)]
    if forced and "test" not in fractions:
        raise ConfigError(f"force_test names {forced} need a 'test' entry in fractions")
    raw = {k: f * len(names) for k, f in fractions.items()}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: len(names) - sum(counts.values())]:
        counts[k] += 1
    if forced and counts["test"] < len(forced):
        deficit = len(forced) - counts["test"]
        counts["test"] = len(forced)
        for k in sorted(counts, key=counts.get, reverse=True):
            take = min(deficit, counts[k]) if k != "test" else 0
            counts[k] -= take
            deficit -= take
    rest = [names[i] for i in np.random.default_rng(seed).permutation(len(names)) if names[i] not in forced]
    out, start = {}, 0
    for k in fractions:
        n = counts[k] - (len(forced) if k == "test" else 0)
        out[k] = sorted((forced if k == "test" else []) + rest[start:start + n])
        start += n
    return out
