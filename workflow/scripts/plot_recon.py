"""Figure 3 (in distribution) or 4 (out of distribution): one MRI row and one 4D-STEM row."""

import json

import numpy as np

from physdiff.data.stem_sim import load_sample
from physdiff.data.transforms import IdentityTransform
from physdiff.io import atomic_path
from physdiff.metrics.paper_tables import LABELS
from physdiff.physics.mri import simulate_kspace, zero_filled
from physdiff.plots.recon import panel_image, plot_reconstructions
from physdiff.recon.problems import STEMProblem
from physdiff.workflow import run_step


def _methods(modality, recons, metrics, sigma=None):
    out = []
    for recon, row_path in zip(recons, metrics):
        row = json.loads(open(row_path).read())
        out.append((LABELS.get(row["method"], row["method"]), panel_image(modality, np.load(recon), sigma=sigma),
                    row["ssim"]))
    return out


def main(smk):
    p, rows = smk.params, []
    if "mri_volumes" in smk.input.keys():
        volume = np.load(smk.input.mri_volumes, mmap_mode="r")[int(p.mri_sample)]
        mask = np.load(smk.input.mri_mask)
        y = simulate_kspace(np.asarray(volume, np.float32), mask, noise_std=p.noise_std, seed=p.seed + int(p.mri_sample))
        rows.append({"label": f"MRI {p.mri_dataset} #{p.mri_sample}, {p.mri_mask}", "modality": "mri",
                     "truth": panel_image("mri", volume), "measured": panel_image("mri", zero_filled(y, mask)),
                     "measured_label": "zero-filled (input)",
                     "methods": _methods("mri", smk.input.mri_recons, smk.input.mri_metrics)})
    if "stem_sample" in smk.input.keys():
        sample = load_sample(smk.input.stem_sample)
        sigma = float(sample["sigma"])
        problem = STEMProblem.from_sample(sample, IdentityTransform(), device="cpu")
        rows.append({"label": f"4D-STEM {sample['name']} [{sample['zone_axis']}]", "modality": "stem",
                     "truth": panel_image("stem", sample["potential"], sigma=sigma),
                     "measured": problem.observed(), "measured_label": "bright field (input)",
                     "methods": _methods("stem", smk.input.stem_recons, smk.input.stem_metrics, sigma)})
    fig = plot_reconstructions(rows, title=p.title)
    with atomic_path(smk.output[0], suffix=".png") as tmp:
        fig.savefig(tmp, dpi=p.dpi)


run_step(snakemake, main)  # noqa: F821
