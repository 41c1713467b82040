"""Draw one seeded k-space undersampling mask and save it."""

import zlib

from physdiff.data.masks import acceleration_of, make_mask
from physdiff.io import save_npy
from physdiff.workflow import log, run_step


def main(smk):
    p, wc = smk.params, smk.wildcards
    # Each (kind, R) gets its own stream, reproducible from the master seed.
    seed = [p.seed, zlib.crc32(f"{wc.kind}_R{wc.R}".encode())]
    mask = make_mask(
        wc.kind, shape=tuple(p.size), acceleration=int(wc.R), center_fraction=p.center_fraction,
        seed=seed, n_slices=p.n_slices if p.per_slice else None,
    )
    log.info("%s mask R=%s: achieved acceleration %.2f", wc.kind, wc.R, acceleration_of(mask))
    save_npy(smk.output[0], mask)


run_step(snakemake, main)  # noqa: F821
