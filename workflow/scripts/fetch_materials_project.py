"""Download one Materials Project structure (key from MP_API_KEY) and write it as CIF."""

from pymatgen.io.ase import AseAtomsAdaptor

from physdiff.data.crystals import fetch_materials_project
from physdiff.io import atomic_path
from physdiff.workflow import run_step


def main(smk):
    ((_, atoms),) = fetch_materials_project([smk.wildcards.mp_id])  # reads MP_API_KEY; never logs it
    with atomic_path(smk.output[0], suffix=".cif") as tmp:
        AseAtomsAdaptor.get_structure(atoms).to(filename=str(tmp), fmt="cif")


run_step(snakemake, main)  # noqa: F821
