"""Preprocess the root volumes to one (N, S, H, W) out-of-distribution test array."""

from physdiff.data.mri_dataset import preprocess_files
from physdiff.data.nifti import find_nifti_volumes, volume_id
from physdiff.io import save_json, save_npy
from physdiff.workflow import run_step


def main(smk):
    p = smk.params
    paths = find_nifti_volumes(smk.input[0])
    save_npy(smk.output.ood, preprocess_files(paths, n_slices=p.n_slices, size=p.size, margin=p.margin))
    save_json(smk.output.subjects, {"ood": [volume_id(path) for path in paths]})


run_step(snakemake, main)  # noqa: F821
