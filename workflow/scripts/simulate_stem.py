"""Simulate the planned 4D-STEM samples of one crystal (or one user structure) with abTEM."""

import spglib
from tqdm.auto import tqdm

from physdiff.data.crystals import get_crystal, load_cif, orthogonal_supercell
from physdiff.data.stem_sim import save_sample, simulate_4dstem
from physdiff.workflow import log, run_step


def simulation_kwargs(sim: dict, seed: int) -> dict:
    """Map the config's `stem.simulation` block onto `simulate_4dstem` keywords."""
    return dict(
        gpts=sim["gpts"], n_slices=sim["n_slices"], energy=sim["energy"], semiangle=sim["semiangle"],
        defocus=sim["defocus"], scan_step=sim["scan_step"], max_angle=sim["max_angle"],
        frozen_phonons=sim["frozen_phonons"], phonon_sigma=sim["phonon_sigma"],
        dose=sim["dose"] or None, seed=seed,
    )


def space_group(atoms) -> int:
    """International space-group number of a structure (spglib, symprec 1e-3 Å)."""
    cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
    return int(spglib.get_symmetry_dataset(cell, symprec=1e-3).number)


def main(smk):
    sim = smk.params.simulation
    rows = smk.params.rows
    for row, out in tqdm(list(zip(rows, smk.output)), desc="simulate", unit="sample"):
        if row["source"] == "catalogue":
            entry = get_crystal(row["name"])
            atoms, ids = entry.atoms(), dict(name=entry.name, formula=entry.formula, spacegroup=entry.spacegroup)
        else:
            atoms = load_cif(smk.input[0])
            ids = dict(name=row["name"], formula=atoms.get_chemical_formula(mode="reduce"), spacegroup=space_group(atoms))
        supercell = orthogonal_supercell(
            atoms, zone_axis=row["zone_axis"], min_extent=(sim["extent"], sim["extent"]),
            min_thickness=sim["thickness"], offset=tuple(row["offset"]),
        )
        sample = simulate_4dstem(supercell, **simulation_kwargs(sim, row["seed"]))
        sample.update(ids, zone_axis=row["zone_axis"])
        log.info("%s: potential %s, %s scan positions, detector %s", row["sample"], sample["potential"].shape,
                 sample["intensities"].shape[:2], sample["intensities"].shape[2:])
        save_sample(out, sample)


run_step(snakemake, main)  # noqa: F821
