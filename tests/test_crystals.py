"""Crystal catalogue, CIF and Materials Project loaders, zone-axis supercells (checked with spglib)."""

import sys
import types

import numpy as np
import pytest
import spglib
from ase.io import write

from physdiff.data import crystals
from physdiff.data.crystals import (
    EXPERIMENTAL_A, catalogue, estimate_lattice_constant, fetch_materials_project, get_crystal,
    hexagonal_ood, load_cif, orthogonal_supercell, parse_zone_axis,
)
from physdiff.errors import ConfigError, InputError, MissingExtraError


def spacegroup_number(atoms, symprec=1e-3):
    cell = (np.asarray(atoms.cell), atoms.get_scaled_positions(), atoms.numbers)
    return spglib.get_symmetry_dataset(cell, symprec=symprec).number


@pytest.mark.parametrize("entry", catalogue() + hexagonal_ood(), ids=lambda e: e.name)
def test_every_structure_has_its_expected_space_group(entry):
    assert spacegroup_number(entry.atoms()) == entry.spacegroup


def test_catalogue_holds_tens_of_distinct_cubic_crystals():
    entries = catalogue()
    names = [e.name for e in entries]
    assert len(entries) >= 30 and len(set(names)) == len(names)
    assert all(e.c is None and e.spacegroup in (216, 221, 225, 227, 229) for e in entries)
    assert {e.prototype for e in entries} >= {"A1", "A2", "B1", "B2", "B3", "C1", "L12", "antiperovskite", "perovskite"}


def test_paper_crystals_present_with_their_lattice_constants():
    copt3, tb3inc = get_crystal("CoPt3"), get_crystal("Tb3InC")
    assert (copt3.prototype, copt3.spacegroup, copt3.formula) == ("L12", 221, "CoPt3")
    assert (tb3inc.prototype, tb3inc.spacegroup, tb3inc.formula) == ("antiperovskite", 221, "Tb3InC")
    assert copt3.a == pytest.approx(3.85, abs=0.02) and tb3inc.a == pytest.approx(4.95, abs=0.02)
    assert np.allclose(copt3.atoms().cell.lengths(), 3.85, atol=0.02)
    # Tb on the faces, In on the corner, C at the body centre
    assert sorted(tb3inc.atoms().get_chemical_symbols()) == ["C", "In", "Tb", "Tb", "Tb"]


def test_radius_estimate_agrees_with_experimental_constants():
    # the estimate is only a fallback; it must still land near measured values
    for entry in catalogue():
        if entry.name in EXPERIMENTAL_A:
            est = estimate_lattice_constant(*crystals._DECORATIONS[entry.name])
            assert abs(est / entry.a - 1) < 0.15, entry.name


def test_hexagonal_ood_list():
    hexes = {e.name: e for e in hexagonal_ood()}
    assert set(hexes) == {"Co", "WC", "ZnO", "MoS2"}
    for e in hexes.values():
        cell = e.atoms().cell
        assert cell.angles()[2] == pytest.approx(120) and cell.lengths()[2] == pytest.approx(e.c)


def test_get_crystal_unknown_name():
    with pytest.raises(ConfigError, match="unknown crystal 'Unobtainium'"):
        get_crystal("Unobtainium")


def test_cif_round_trip(tmp_path):
    atoms = get_crystal("Tb3InC").atoms()
    path = tmp_path / "tb3inc.cif"
    write(path, atoms, format="cif")
    loaded = load_cif(path)
    assert sorted(loaded.get_chemical_symbols()) == sorted(atoms.get_chemical_symbols())
    assert np.allclose(loaded.cell.lengths(), atoms.cell.lengths(), atol=1e-4)
    assert spacegroup_number(loaded) == 221


def test_bad_cif_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.cif"):
        load_cif(tmp_path / "missing.cif")
    bad = tmp_path / "garbage.cif"
    bad.write_text("this is not a CIF file\n")
    with pytest.raises(InputError, match="garbage.cif"):
        load_cif(bad)
    empty = tmp_path / "empty.cif"
    empty.write_text("")
    with pytest.raises(InputError, match="empty.cif"):
        load_cif(empty)


@pytest.fixture
def fake_mp_api(monkeypatch):
    """A stand-in `mp_api.client` serving one primitive fcc Cu cell; records the key it got."""
    from pymatgen.core import Lattice, Structure

    seen = {}

    class FakeMPRester:
        def __init__(self, key):
            seen["key"] = key

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def get_structure_by_material_id(self, mid):
            if mid != "mp-30":
                raise RuntimeError(f"no such material (request header X-API-KEY: {seen['key']})")
            return Structure(Lattice.from_parameters(2.556, 2.556, 2.556, 60, 60, 60), ["Cu"], [[0, 0, 0]])

    module = types.ModuleType("mp_api.client")
    module.MPRester = FakeMPRester
    monkeypatch.setitem(sys.modules, "mp_api", types.ModuleType("mp_api"))
    monkeypatch.setitem(sys.modules, "mp_api.client", module)
    return seen


def test_materials_project_without_key_says_set_the_variable(fake_mp_api, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="MP_API_KEY"):
        fetch_materials_project(["mp-30"])


def test_materials_project_converts_to_conventional_and_hides_the_key(fake_mp_api, monkeypatch):
    secret = "s3cr3t-key-0123456789"
    monkeypatch.setenv("MP_API_KEY", secret)
    [(mid, atoms)] = fetch_materials_project(["mp-30"])
    assert mid == "mp-30" and fake_mp_api["key"] == secret
    assert len(atoms) == 4 and np.allclose(atoms.cell.lengths(), 2.556 * np.sqrt(2), atol=1e-3)
    with pytest.raises(InputError, match="mp-404") as info:
        fetch_materials_project(["mp-404"])
    assert secret not in str(info.value) and secret not in repr(info.value)


def test_materials_project_without_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "mp_api", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "mp_api.client", None)
    with pytest.raises(MissingExtraError, match="mp-api"):
        fetch_materials_project(["mp-30"], api_key="x")


def test_parse_zone_axis():
    assert parse_zone_axis("011") == (0, 1, 1)
    assert parse_zone_axis("1-10") == (1, -1, 0)
    assert parse_zone_axis("11-20") == (1, 1, 0)  # [11-20] = [110] in three indices
    assert parse_zone_axis("0001") == (0, 0, 1)
    assert parse_zone_axis((2, 2, 0)) == (1, 1, 0)
    with pytest.raises(ConfigError):
        parse_zone_axis("000")


@pytest.mark.parametrize("name,axis", [("CoPt3", "001"), ("CoPt3", "011"), ("CoPt3", "111"),
                                       ("Tb3InC", "111"), ("GaAs", "011"), ("Co", "0001"),
                                       ("ZnO", "11-20"), ("MoS2", "0001")])
def test_orthogonal_supercell_is_the_same_crystal_along_the_zone_axis(name, axis):
    entry = get_crystal(name)
    unit = entry.atoms()
    sup = orthogonal_supercell(unit, zone_axis=axis, min_extent=(9.0, 11.0), min_thickness=14.0, offset=(0.31, 0.72))
    cell = np.asarray(sup.cell)
    assert np.allclose(cell, np.diag(np.diag(cell)), atol=1e-9)
    assert cell[0, 0] >= 9.0 and cell[1, 1] >= 11.0 and cell[2, 2] >= 14.0
    assert len(sup) / sup.get_volume() == pytest.approx(len(unit) / unit.get_volume())
    assert spacegroup_number(sup) == entry.spacegroup
    assert np.all((sup.get_scaled_positions() >= 0) & (sup.get_scaled_positions() < 1))


def test_orthogonal_supercell_axes_have_the_expected_periods():
    a = get_crystal("CoPt3").a
    for axis, period in [("001", (a, a, a)), ("011", (a, a * 2**0.5, a * 2**0.5)),
                         ("111", (a * 2**0.5, a * 6**0.5, a * 3**0.5))]:
        sup = orthogonal_supercell(get_crystal("CoPt3").atoms(), zone_axis=axis, min_extent=(1, 1), min_thickness=1)
        assert np.allclose(sup.cell.lengths(), period)


def test_orthogonal_supercell_offset_moves_atoms_laterally():
    atoms = get_crystal("CoPt3").atoms()
    base = orthogonal_supercell(atoms, min_extent=(1, 1), min_thickness=1)
    shifted = orthogonal_supercell(atoms, min_extent=(1, 1), min_thickness=1, offset=(0.25, 0.0))
    co = [i for i, s in enumerate(shifted.get_chemical_symbols()) if s == "Co"]
    assert np.allclose(shifted.positions[co], base.positions[co] + [0.25 * base.cell[0, 0], 0, 0])


def test_orthogonal_supercell_rejects_empty_structure():
    from ase import Atoms

    with pytest.raises(InputError, match="no atoms"):
        orthogonal_supercell(Atoms(cell=[3, 3, 3], pbc=True))
