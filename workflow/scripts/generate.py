"""Sample N unconditional volumes from the G partition models, slabs stacked in order.

The volumes stay in the prior's [0, 1]; for 4D-STEM, the prior's scale file
(`physdiff.results.Layout.stem_scale`, read by `physdiff.data.transforms.load_transform`)
decodes them to V·Å.
"""

import torch

from physdiff.io import save_npy
from physdiff.models.sampling import sample_volumes
from physdiff.models.train import load_model
from physdiff.workflow import log, run_step


def main(smk):
    models = [load_model(path)[0] for path in smk.input]  # loaded on the CPU, moved per partition
    s, gen = smk.params.sampling, smk.params.generate
    log.info("sampling %d volumes %s with %d partition model(s), %s %d steps, eta %g, seams %s, mean x0 below SNR %g, on %s",
             gen["n_volumes"], tuple(smk.params.shape), len(models), s["sampler"], s["steps"], s["eta"], s.get("seam", "none"),
             s.get("mean_snr", 0.0),
             f"{torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "the CPU")
    volumes = sample_volumes(
        models, gen["n_volumes"], tuple(smk.params.shape), batch_size=gen["batch_size"], seed=smk.params.seed,
        sampler=s["sampler"], steps=s["steps"], eta=s["eta"], seam=s.get("seam", "none"),
        mean_snr=s.get("mean_snr", 0.0),
    )
    save_npy(smk.output[0], volumes)


run_step(snakemake, main)  # noqa: F821
