"""Crystal structures for the 4D-STEM data: an offline cubic catalogue, hexagonal OOD examples,
CIF files, the Materials Project, and orthogonal zone-axis supercells for the multislice.

Lattice constants of the catalogue
----------------------------------
Each entry takes its lattice constant `a` (Å) from a table of room-temperature experimental
values (`EXPERIMENTAL_A`, standard handbook values) where the compound is listed there, and
otherwise from a hard-sphere contact estimate (`estimate_lattice_constant`):

    a = mean over the prototype's nearest-neighbour pairs (i, j) of (r_i + r_j) / f_ij

with r the empirical atomic radii of Slater (1964) as pymatgen gives them
(`Element.atomic_radius`) and f_ij the pair's nearest-neighbour distance in units of `a`
(e.g. 1/sqrt(2) for fcc, sqrt(3)/4 for zincblende). The estimate is within a few per cent of
the table for compounds (CoPt3: 3.82 Å against 3.85 Å; Tb3InC: 4.78 Å against 4.95 Å) and
within 13 % for elemental metals. Only TiPt3 and Mn3ZnN use the estimate; CoPt3 and Tb3InC,
the paper's two examples, take the tabulated 3.85 Å and 4.95 Å.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import make_supercell
from ase.spacegroup import crystal

from physdiff.errors import ConfigError, InputError, MissingExtraError

_R2, _R3 = math.sqrt(2.0), math.sqrt(3.0)

# prototype -> (space group, Wyckoff sites as (role, fractional position),
#               nearest-neighbour contact pairs as (role_i, role_j, distance / a))
PROTOTYPES: dict[str, tuple[int, list[tuple[str, tuple]], list[tuple[str, str, float]]]] = {
    "A1": (225, [("A", (0, 0, 0))], [("A", "A", 1 / _R2)]),  # fcc Cu
    "A2": (229, [("A", (0, 0, 0))], [("A", "A", _R3 / 2)]),  # bcc W
    "A4": (227, [("A", (0, 0, 0))], [("A", "A", _R3 / 4)]),  # diamond Si
    "B1": (225, [("A", (0, 0, 0)), ("B", (0.5, 0.5, 0.5))], [("A", "B", 0.5)]),  # rocksalt
    "B2": (221, [("A", (0, 0, 0)), ("B", (0.5, 0.5, 0.5))], [("A", "B", _R3 / 2)]),  # CsCl
    "B3": (216, [("A", (0, 0, 0)), ("B", (0.25, 0.25, 0.25))], [("A", "B", _R3 / 4)]),  # ZnS
    "C1": (225, [("A", (0, 0, 0)), ("B", (0.25, 0.25, 0.25))], [("A", "B", _R3 / 4)]),  # CaF2
    # L1_2 A B3 (Cu3Au type written B3A: minority A at the corner, B on the faces)
    "L12": (221, [("A", (0, 0, 0)), ("B", (0, 0.5, 0.5))], [("A", "B", 1 / _R2), ("B", "B", 1 / _R2)]),
    # antiperovskite A3BC: B at the corner, A on the faces, C (C/N) at the body centre
    "antiperovskite": (221, [("B", (0, 0, 0)), ("A", (0, 0.5, 0.5)), ("C", (0.5, 0.5, 0.5))],
                       [("A", "C", 0.5), ("A", "B", 1 / _R2)]),
    # perovskite ABO3: A at the corner, B at the body centre, O on the faces
    "perovskite": (221, [("A", (0, 0, 0)), ("B", (0.5, 0.5, 0.5)), ("O", (0.5, 0.5, 0))],
                   [("B", "O", 0.5), ("A", "O", 1 / _R2)]),
    # full Heusler L2_1 X2YZ
    "L21": (225, [("Y", (0, 0, 0)), ("Z", (0.5, 0.5, 0.5)), ("X", (0.25, 0.25, 0.25))],
            [("X", "Y", _R3 / 4), ("X", "Z", _R3 / 4)]),
}

# name -> (prototype, {role: element})
_DECORATIONS: dict[str, tuple[str, dict[str, str]]] = {
    **{el: ("A1", {"A": el}) for el in ["Cu", "Al", "Ni", "Ag", "Au", "Pt"]},
    **{el: ("A2", {"A": el}) for el in ["Fe", "W", "Mo", "Cr", "Nb"]},
    **{el: ("A4", {"A": el}) for el in ["Si", "Ge", "C"]},
    **{f"{a}{b}": ("B1", {"A": a, "B": b}) for a, b in
       [("Na", "Cl"), ("Mg", "O"), ("K", "Cl"), ("Li", "F"), ("Pb", "S"), ("Ti", "C")]},
    **{f"{a}{b}": ("B2", {"A": a, "B": b}) for a, b in
       [("Cs", "Cl"), ("Ni", "Al"), ("Cu", "Zn"), ("Fe", "Al")]},
    **{f"{a}{b}": ("B3", {"A": a, "B": b}) for a, b in
       [("Ga", "As"), ("Zn", "S"), ("In", "P"), ("Cd", "Te"), ("Si", "C")]},
    **{f"{a}{b}2": ("C1", {"A": a, "B": b}) for a, b in
       [("Ca", "F"), ("Ce", "O"), ("Ba", "F"), ("Sr", "F")]},
    **{name: ("L12", {"A": a, "B": b}) for name, a, b in
       [("CoPt3", "Co", "Pt"), ("Cu3Au", "Au", "Cu"), ("Ni3Al", "Al", "Ni"), ("FePt3", "Fe", "Pt"),
        ("TiPt3", "Ti", "Pt")]},
    **{f"{a}3{b}{c}": ("antiperovskite", {"A": a, "B": b, "C": c}) for a, b, c in
       [("Tb", "In", "C"), ("Ni", "Mg", "C"), ("Mn", "Ga", "C"), ("Mn", "Zn", "N")]},
    **{f"{a}{b}O3": ("perovskite", {"A": a, "B": b, "O": "O"}) for a, b in
       [("Sr", "Ti"), ("Ba", "Zr"), ("K", "Ta"), ("Ba", "Sn")]},
    **{f"{x}2{y}{z}": ("L21", {"X": x, "Y": y, "Z": z}) for x, y, z in
       [("Cu", "Mn", "Al"), ("Ni", "Mn", "Ga")]},
}

# Room-temperature experimental lattice constants (Å); they override the estimate.
EXPERIMENTAL_A: dict[str, float] = {
    "Cu": 3.615, "Al": 4.050, "Ni": 3.524, "Ag": 4.086, "Au": 4.078, "Pt": 3.924,
    "Fe": 2.867, "W": 3.165, "Mo": 3.147, "Cr": 2.885, "Nb": 3.300,
    "Si": 5.431, "Ge": 5.658, "C": 3.567,
    "NaCl": 5.640, "MgO": 4.212, "KCl": 6.293, "LiF": 4.027, "PbS": 5.936, "TiC": 4.328,
    "CsCl": 4.123, "NiAl": 2.887, "CuZn": 2.950, "FeAl": 2.910,
    "GaAs": 5.653, "ZnS": 5.409, "InP": 5.869, "CdTe": 6.481, "SiC": 4.360,
    "CaF2": 5.463, "CeO2": 5.411, "BaF2": 6.200, "SrF2": 5.800,
    "CoPt3": 3.850, "Cu3Au": 3.749, "Ni3Al": 3.567, "FePt3": 3.866,
    "Tb3InC": 4.950, "Ni3MgC": 3.812, "Mn3GaC": 3.896,
    "SrTiO3": 3.905, "BaZrO3": 4.193, "KTaO3": 3.989, "BaSnO3": 4.116,
    "Cu2MnAl": 5.950, "Ni2MnGa": 5.825,
}


@dataclass(frozen=True)
class CrystalEntry:
    """One crystal: conventional cell built from Wyckoff sites with ase.spacegroup.crystal.

    `a` and `c` are lattice constants in Å (`c` only for hexagonal cells); `sites` are
    (element, fractional position) pairs of the asymmetric unit.
    """

    name: str
    formula: str
    prototype: str
    spacegroup: int
    a: float
    sites: tuple[tuple[str, tuple[float, float, float]], ...]
    c: float | None = None
    a_source: str = "experimental"

    def atoms(self) -> Atoms:
        """The conventional cell as ase.Atoms (cubic: a x a x a; hexagonal: a, a, c, gamma 120°)."""
        symbols = [s for s, _ in self.sites]
        basis = [p for _, p in self.sites]
        cellpar = [self.a, self.a, self.a, 90, 90, 90] if self.c is None else [self.a, self.a, self.c, 90, 90, 120]
        return crystal(symbols, basis, spacegroup=self.spacegroup, cellpar=cellpar)


def estimate_lattice_constant(prototype: str, elements: dict[str, str]) -> float:
    """Hard-sphere estimate a = mean_{(i,j)} (r_i + r_j) / f_ij in Å (Slater radii; see module doc)."""
    from pymatgen.core import Element

    radius = {role: float(Element(el).atomic_radius) for role, el in elements.items()}
    pairs = PROTOTYPES[prototype][2]
    return float(np.mean([(radius[i] + radius[j]) / f for i, j, f in pairs]))


def _cubic_entry(name: str, prototype: str, elements: dict[str, str]) -> CrystalEntry:
    spacegroup, sites, _ = PROTOTYPES[prototype]
    if name in EXPERIMENTAL_A:
        a, source = EXPERIMENTAL_A[name], "experimental"
    else:
        a, source = estimate_lattice_constant(prototype, elements), "estimate"
    built = tuple((elements[role], tuple(float(x) for x in pos)) for role, pos in sites)
    cell = crystal([s for s, _ in built], [p for _, p in built], spacegroup=spacegroup, cellpar=[a] * 3 + [90] * 3)
    from pymatgen.core import Composition  # here: modules importing this one skip its 0.8 s import

    formula = Composition(cell.get_chemical_formula()).reduced_formula
    return CrystalEntry(name, formula, prototype, spacegroup, a, built, a_source=source)


def catalogue() -> list[CrystalEntry]:
    """The offline cubic catalogue (in-distribution crystals), sorted by name."""
    return sorted((_cubic_entry(n, p, el) for n, (p, el) in _DECORATIONS.items()), key=lambda e: e.name)


def hexagonal_ood() -> list[CrystalEntry]:
    """Hexagonal out-of-distribution crystals with literature lattice constants (Å).

    hcp Co: a 2.507, c 4.070 (P6_3/mmc, Co at 2c). WC: a 2.906, c 2.837 (P-6m2, W 1a, C 1d).
    Wurtzite ZnO: a 3.250, c 5.207, u 0.382 (P6_3mc, Zn and O at 2b). 2H-MoS2: a 3.160,
    c 12.294, z(S) 0.621 (P6_3/mmc, Mo 2c, S 4f).
    """
    third, two3 = 1 / 3, 2 / 3
    rows = [  # name, formula, prototype, space group, a, c, sites
        ("Co", "Co", "hcp", 194, 2.507, 4.070, [("Co", (third, two3, 0.25))]),
        ("WC", "WC", "WC", 187, 2.906, 2.837, [("W", (0, 0, 0)), ("C", (third, two3, 0.5))]),
        ("ZnO", "ZnO", "wurtzite", 186, 3.250, 5.207, [("Zn", (third, two3, 0.0)), ("O", (third, two3, 0.382))]),
        ("MoS2", "MoS2", "2H-MoS2", 194, 3.160, 12.294, [("Mo", (third, two3, 0.25)), ("S", (third, two3, 0.621))]),
    ]
    return [CrystalEntry(n, f, p, sg, a, tuple(s), c=c) for n, f, p, sg, a, c, s in rows]


def get_crystal(name: str) -> CrystalEntry:
    """Look a crystal up by name in the cubic catalogue or the hexagonal OOD list."""
    for entry in catalogue() + hexagonal_ood():
        if entry.name == name:
            return entry
    raise ConfigError(f"unknown crystal {name!r}; known: {', '.join(e.name for e in catalogue() + hexagonal_ood())}")


def load_cif(path: str | os.PathLike) -> Atoms:
    """Read a CIF file into ase.Atoms (conventional cell, symmetry expanded by pymatgen)."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifParser

    path = Path(path)
    if not path.is_file():
        raise InputError(f"CIF file {path} does not exist")
    try:
        structures = CifParser(path).parse_structures(primitive=False)
    except Exception as err:  # pymatgen raises ValueError, KeyError, ... on malformed files
        raise InputError(f"CIF file {path} could not be parsed as a crystal structure: {err}") from err
    if not structures or len(structures[0]) == 0:
        raise InputError(f"CIF file {path} holds no atoms; expected at least one structure")
    return AseAtomsAdaptor.get_atoms(structures[0])


def fetch_materials_project(material_ids: list[str], *, api_key: str | None = None) -> list[tuple[str, Atoms]]:
    """Download structures by Materials Project id as conventional standard cells.

    The key comes from `api_key` or the MP_API_KEY environment variable; it is never logged.
    """
    try:
        from mp_api.client import MPRester
    except ImportError:
        raise MissingExtraError("mp-api", "mp", "Materials Project download") from None
    key = api_key or os.environ.get("MP_API_KEY")
    if not key:
        raise ConfigError("Materials Project download needs an API key: set the MP_API_KEY environment "
                          "variable (or pass api_key); get one at https://next-gen.materialsproject.org/api")
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    out = []
    with MPRester(key) as mpr:
        for mid in material_ids:
            try:
                structure = mpr.get_structure_by_material_id(mid)
            except Exception as err:
                # scrub the key: some HTTP errors echo request headers
                msg = str(err).replace(key, "***")
                raise InputError(f"Materials Project id {mid!r} could not be fetched: {type(err).__name__}: {msg}") from None
            conventional = SpacegroupAnalyzer(structure).get_conventional_standard_structure()
            out.append((mid, AseAtomsAdaptor.get_atoms(conventional)))
    return out


def parse_zone_axis(zone_axis: str | tuple[int, ...]) -> tuple[int, int, int]:
    """Zone axis as three direct-lattice indices [uvw]; "11-20" style 4-index [UVTW] becomes [U-T, V-T, W]."""
    if isinstance(zone_axis, str):
        digits, sign = [], 1
        for ch in zone_axis.replace(" ", "").replace(",", ""):
            if ch == "-":
                sign = -1
            elif ch.isdigit():
                digits.append(sign * int(ch))
                sign = 1
            else:
                raise ConfigError(f"zone axis {zone_axis!r}: expected digits such as '011' or '11-20'")
    else:
        digits = [int(x) for x in zone_axis]
    if len(digits) == 4:
        u, v, t, w = digits
        if u + v + t != 0:
            raise ConfigError(f"zone axis {zone_axis!r}: a 4-index axis [UVTW] needs U + V + T = 0")
        digits = [u - t, v - t, w]
    if len(digits) != 3 or not any(digits):
        raise ConfigError(f"zone axis {zone_axis!r}: expected 3 (or 4 hexagonal) indices, not all zero")
    g = math.gcd(*digits)
    return tuple(d // g for d in digits)


def _orthogonal_basis(cell: np.ndarray, uvw: tuple[int, int, int], search: int = 4,
                      tol: float = 1e-4) -> np.ndarray | None:
    """Integer rows [a; b; c] with c = uvw and a, b the shortest mutually perpendicular lattice vectors ⊥ c."""
    direction = np.asarray(uvw) @ cell
    grid = np.arange(-search, search + 1)
    cand = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    cand = cand[np.any(cand != 0, axis=1)]
    vecs = cand @ cell
    lengths = np.linalg.norm(vecs, axis=1)
    perp = np.abs(vecs @ direction) < tol * lengths * np.linalg.norm(direction)
    cand, vecs, lengths = cand[perp], vecs[perp], lengths[perp]
    order = np.argsort(lengths, kind="stable")
    for i in order:
        for j in order:
            if abs(vecs[i] @ vecs[j]) < tol * lengths[i] * lengths[j]:
                rows = np.array([cand[i], cand[j], uvw])
                det = round(np.linalg.det(rows))
                if det != 0:
                    if det < 0:
                        rows[1] *= -1
                    return rows
    return None


def orthogonal_supercell(atoms: Atoms, *, zone_axis: str | tuple[int, ...] = (0, 0, 1),
                         min_extent: tuple[float, float] = (10.0, 10.0), min_thickness: float = 15.0,
                         offset: tuple[float, float] = (0.0, 0.0)) -> Atoms:
    """Orthogonal supercell with the zone axis [uvw] (of `atoms`' cell) along the beam (z).

    The cell is spanned by exact lattice vectors (a, b ⊥ [uvw], c = [uvw]), so it stays
    periodic without strain; it is repeated to at least `min_extent` (Å, x and y) and
    `min_thickness` (Å, z). `offset` shifts the atoms laterally by (fx, fy) of one orthogonal
    repeat unit, wrapping them back into the cell.
    """
    if len(atoms) == 0:
        raise InputError("orthogonal_supercell: the structure holds no atoms")
    uvw = parse_zone_axis(zone_axis)
    rows = _orthogonal_basis(np.asarray(atoms.cell), uvw)
    if rows is None:
        raise InputError(f"no orthogonal cell with zone axis {list(uvw)} exists within 4 lattice steps of "
                         f"the cell of {atoms.get_chemical_formula()}")
    sup = make_supercell(atoms, rows)
    cell = np.asarray(sup.cell)
    lengths = np.linalg.norm(cell, axis=1)
    rotation = cell / lengths[:, None]  # rows: new x, y, z unit vectors in old coordinates
    ortho = Atoms(sup.get_chemical_symbols(), positions=sup.positions @ rotation.T,
                  cell=np.diag(lengths), pbc=True)
    ortho.translate([offset[0] * lengths[0], offset[1] * lengths[1], 0.0])
    ortho.wrap()
    reps = [max(1, math.ceil(m / l - 1e-9)) for m, l in zip((*min_extent, min_thickness), lengths)]
    return ortho.repeat(reps)
