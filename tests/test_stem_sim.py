"""abTEM 4D-STEM simulation, the sample file format, sample plans and crystal splits."""

import abtem
import numpy as np
import pytest
from abtem.core.energy import energy2sigma, energy2wavelength
from ase import Atoms

from physdiff.data.crystals import catalogue, get_crystal, hexagonal_ood, orthogonal_supercell
from physdiff.data.stem_sim import (
    ID_KEYS, SIM_KEYS, load_sample, phase_projection, save_sample, simulate_4dstem, simulate_crystal,
    split_crystals, stem_sample_plan,
)
from physdiff.errors import ConfigError, InputError

SMALL = dict(gpts=48, n_slices=4, energy=200e3, semiangle=20.0, scan_gpts=(4, 5), seed=3)


@pytest.fixture(scope="module")
def copt3_cell():
    return orthogonal_supercell(get_crystal("CoPt3").atoms(), min_extent=(7, 7), min_thickness=7)


@pytest.fixture(scope="module")
def sample(copt3_cell):
    out = simulate_4dstem(copt3_cell, **SMALL)
    out.update(name="CoPt3", formula="CoPt3", zone_axis="001", spacegroup=221)
    return out


def test_sample_shapes_dtypes_and_metadata(sample, copt3_cell):
    extent, thickness = copt3_cell.cell.lengths()[:2], copt3_cell.cell.lengths()[2]
    assert sample["potential"].shape == (4, 48, 48) and sample["potential"].dtype == np.float32
    nx, ny, kx, ky = sample["intensities"].shape
    assert (nx, ny) == (4, 5) and sample["intensities"].dtype == np.float32
    assert sample["bright_field"].shape == (4, 5) and sample["bright_field"].dtype == np.float32
    assert sample["positions"].shape == (4, 5, 2) and sample["positions"].dtype == np.float64
    assert tuple(sample["detector_gpts"]) == (kx, ky)
    assert np.allclose(sample["extent"], extent) and np.allclose(sample["sampling"], extent / 48)
    assert sample["slice_thickness"].shape == (4,) and sample["slice_thickness"].sum() == pytest.approx(thickness)
    assert sample["sigma"] == pytest.approx(energy2sigma(200e3)) == pytest.approx(7.2884e-4, rel=1e-4)
    assert sample["wavelength"] == pytest.approx(energy2wavelength(200e3))
    # positions span [0, extent) with the end point excluded
    assert np.allclose(sample["positions"][:, 0, 0], np.arange(4) * extent[0] / 4)
    assert np.allclose(sample["positions"][0, :, 1], np.arange(5) * extent[1] / 5)
    assert sample["dose"] == 0.0 and sample["frozen_phonons"] == 0
    assert np.all(sample["potential"] >= 0)


def test_patterns_are_not_renormalised(sample):
    totals = sample["intensities"].sum((-1, -2))
    # the probe carries unit norm; the "valid" crop loses what Pt scatters to high angles
    assert np.all(totals < 1.0 + 1e-3) and np.all(totals > 0.5) and totals.std() > 1e-3


def test_bright_field_matches_abtem_annular_detector(sample, copt3_cell):
    with abtem.config.set({"dask.lazy": False, "diagnostics.progress_bar": False}):
        potential = abtem.Potential(copt3_cell, gpts=48, slice_thickness=tuple(sample["slice_thickness"]))
        probe = abtem.Probe(energy=200e3, semiangle_cutoff=20.0)
        scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, gpts=(4, 5), potential=potential)
        annular = probe.scan(potential, scan=scan, detectors=abtem.AnnularDetector(inner=0, outer=20.0))
    assert np.allclose(sample["bright_field"], annular.array, rtol=1e-5, atol=1e-6)


def test_simulation_matches_direct_abtem_call(sample, copt3_cell):
    thickness = copt3_cell.cell[2, 2]
    with abtem.config.set({"dask.lazy": False, "diagnostics.progress_bar": False}):
        potential = abtem.Potential(copt3_cell, gpts=48, slice_thickness=thickness / 4, projection="infinite")
        probe = abtem.Probe(energy=200e3, semiangle_cutoff=20.0, defocus=0.0)
        scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, gpts=(4, 5), potential=potential)
        measured = probe.scan(potential, scan=scan, detectors=abtem.PixelatedDetector(max_angle="valid"))
        built = potential.build()
    # float32 agreement: FFTW plans (wisdom from other tests in this process) may differ in the last bits
    assert np.allclose(sample["potential"], built.array, rtol=0, atol=1e-6 * np.abs(built.array).max())
    assert np.allclose(sample["slice_thickness"], built.slice_thickness)
    assert np.allclose(sample["intensities"], measured.array, rtol=1e-5, atol=1e-8)
    assert np.allclose(sample["positions"], scan.get_positions())
    assert np.allclose(sample["angular_sampling"], measured.angular_sampling)


def test_phase_projection_is_sigma_times_summed_potential(sample):
    phase = phase_projection(sample)
    assert phase.shape == (48, 48)
    assert np.allclose(phase, energy2sigma(200e3) * sample["potential"].astype(float).sum(0))


def test_frozen_phonons_keep_the_static_ground_truth(copt3_cell, sample):
    jiggled = simulate_4dstem(copt3_cell, **{**SMALL, "frozen_phonons": 2})
    assert np.array_equal(jiggled["potential"], sample["potential"])
    assert not np.allclose(jiggled["intensities"], sample["intensities"], atol=1e-4)
    assert jiggled["frozen_phonons"] == 2


def test_dose_gives_poisson_counts_around_the_noiseless_patterns(copt3_cell, sample):
    noisy = simulate_4dstem(copt3_cell, **{**SMALL, "dose": 1e4})
    electrons = noisy["electrons_per_position"]
    assert electrons == pytest.approx(1e4 * np.prod(sample["extent"] / (4, 5)))
    counts = noisy["intensities"].astype(float) * electrons
    assert np.allclose(counts, np.round(counts), atol=0.05)
    expected = sample["intensities"].astype(float) * electrons
    z = (counts - expected) / np.sqrt(np.maximum(expected, 1.0))
    assert abs(z.mean()) < 0.1 and 0.8 < z[expected > 10].std() < 1.2
    again = simulate_4dstem(copt3_cell, **{**SMALL, "dose": 1e4})
    assert np.array_equal(again["intensities"], noisy["intensities"])  # seeded


def test_scan_step_sets_the_scan_grid(copt3_cell):
    out = simulate_4dstem(copt3_cell, **{**SMALL, "scan_gpts": None, "scan_step": 2.0, "n_slices": 2})
    assert out["intensities"].shape[:2] == (4, 4)  # ceil(7.7 / 2)
    assert np.diff(out["positions"][:, 0, 0]).max() <= 2.0


def test_errors_on_bad_input(copt3_cell):
    with pytest.raises(InputError, match="no atoms"):
        simulate_4dstem(Atoms(cell=[8, 8, 8], pbc=True), **SMALL)
    with pytest.raises(ConfigError, match="prime factor 67"):
        simulate_4dstem(copt3_cell, **{**SMALL, "gpts": 67})
    with pytest.raises(ConfigError, match="prime factor 11"):
        simulate_4dstem(copt3_cell, **{**SMALL, "gpts": (48, 44)})
    with pytest.raises(InputError, match="grid too coarse"):
        simulate_4dstem(copt3_cell, **{**SMALL, "gpts": 16})
    with pytest.raises(InputError, match="max_angle"):  # cutoff clears 20 mrad, the valid square does not
        simulate_4dstem(copt3_cell, **{**SMALL, "gpts": 28})
    with pytest.raises(InputError, match="cell too small"):
        simulate_4dstem(copt3_cell, **{**SMALL, "scan_gpts": (1, 4)})
    tiny = get_crystal("Fe").atoms()  # 2.87 Å, under 4 Airy radii of a 20 mrad probe
    with pytest.raises(InputError, match="cell too small"):
        simulate_4dstem(tiny, **{**SMALL, "gpts": 16, "scan_gpts": (2, 2)})
    with pytest.raises(InputError, match="orthogonal"):
        simulate_4dstem(hexagonal_ood()[0].atoms(), **SMALL)


def test_simulate_crystal_adds_identification():
    out = simulate_crystal(get_crystal("Tb3InC"), zone_axis="001", min_extent=(4, 4), min_thickness=4,
                           **{**SMALL, "n_slices": 2, "scan_gpts": (2, 2)})
    assert (out["name"], out["formula"], out["zone_axis"], out["spacegroup"]) == ("Tb3InC", "Tb3InC", "001", 221)
    assert np.allclose(out["extent"], 4.95)


def test_save_load_round_trip(tmp_path, sample):
    path = tmp_path / "s.npz"
    save_sample(path, sample)
    loaded = load_sample(path)
    assert set(loaded) == set(sample)
    for key, value in sample.items():
        if isinstance(value, np.ndarray):
            assert loaded[key].dtype == value.dtype and np.array_equal(loaded[key], value), key
        else:
            assert loaded[key] == value and type(loaded[key]) is type(value), key


def test_load_sample_names_file_and_missing_key(tmp_path, sample):
    path = tmp_path / "broken.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in sample.items() if k != "intensities"})
    with pytest.raises(InputError, match=r"broken\.npz.*'intensities'"):
        load_sample(path)
    nan = dict(sample, potential=np.full_like(sample["potential"], np.nan))
    np.savez(tmp_path / "nan.npz", **{k: np.asarray(v) for k, v in nan.items()})
    with pytest.raises(InputError, match="NaN"):
        load_sample(tmp_path / "nan.npz")
    with pytest.raises(InputError, match="bright_field"):
        save_sample(tmp_path / "x.npz", dict(sample, bright_field=sample["bright_field"][:2]))
    with pytest.raises(InputError, match="nothing.npz"):
        load_sample(tmp_path / "nothing.npz")
    assert set(SIM_KEYS + ID_KEYS) <= set(sample)


def test_sample_plan_is_distinct_and_seeded():
    entries = catalogue()
    plan = stem_sample_plan(entries, zone_axes=["001", "011", "111"], offsets_per_axis=3, seed=7)
    assert len(plan) == len(entries) * 9
    keys = {(p["name"], p["zone_axis"], p["offset"]) for p in plan}
    assert len(keys) == len(plan) and len({p["sample_id"] for p in plan}) == len(plan)
    assert stem_sample_plan(entries, zone_axes=["001", "011", "111"], offsets_per_axis=3, seed=7) == plan
    # the plan of one crystal does not depend on which other crystals are listed
    alone = stem_sample_plan(["CoPt3"], zone_axes=["001", "011", "111"], offsets_per_axis=3, seed=7)
    assert alone == [p for p in plan if p["name"] == "CoPt3"]
    other = stem_sample_plan(["CoPt3"], zone_axes=["001", "011", "111"], offsets_per_axis=3, seed=8)
    assert [p["offset"] for p in other] != [p["offset"] for p in alone]


def test_split_by_crystal_keeps_test_crystals_unseen():
    names = [e.name for e in catalogue()]
    splits = split_crystals(names, fractions={"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    assert sorted(sum(splits.values(), [])) == sorted(names)
    assert {"CoPt3", "Tb3InC"} <= set(splits["test"])
    assert not set(splits["train"]) & set(splits["test"])
    assert len(splits["train"]) == round(0.8 * len(names))
    assert split_crystals(list(reversed(names)), fractions={"train": 0.8, "val": 0.1, "test": 0.1}, seed=0) == splits
    assert split_crystals(names, fractions={"train": 0.8, "val": 0.1, "test": 0.1}, seed=1) != splits
    tiny = split_crystals(["CoPt3", "Tb3InC", "Cu", "Al"], fractions={"train": 0.9, "test": 0.1}, seed=0)
    assert tiny == {"train": ["Al", "Cu"], "test": ["CoPt3", "Tb3InC"]}
    with pytest.raises(ConfigError):
        split_crystals(names, fractions={"train": 0.5, "test": 0.2}, seed=0)


def test_simulation_plans_its_ffts_deterministically(copt3_cell, sample, monkeypatch):
    # FFTW_MEASURE times candidate plans, so a busy machine changed samples in the last bits; the
    # simulation must plan afresh with FFTW_ESTIMATE whatever the caller set or measured before.
    seen = []
    build = abtem.Potential.build

    def spy(self, *args, **kwargs):
        seen.append(abtem.config.get("fftw.planning_effort"))
        return build(self, *args, **kwargs)

    monkeypatch.setattr(abtem.Potential, "build", spy)
    with abtem.config.set({"fftw.planning_effort": "FFTW_MEASURE"}):
        again = simulate_4dstem(copt3_cell, **SMALL)
        assert abtem.config.get("fftw.planning_effort") == "FFTW_MEASURE"  # the caller's setting is restored
    assert seen and set(seen) == {"FFTW_ESTIMATE"}
    # measured wisdom left by earlier work in this process (the direct abTEM call above) is not reused
    assert np.array_equal(again["potential"], sample["potential"])
    assert np.array_equal(again["intensities"], sample["intensities"])
