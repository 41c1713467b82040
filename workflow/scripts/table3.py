"""Score the generated MRI volumes against the real test volumes: results/tables/table3.{csv,md,tex}."""

from physdiff.metrics.table3 import run_table3
from physdiff.workflow import log, run_step


def main(smk):
    cfg = {"metrics": smk.params.metrics, "seed": smk.params.seed}
    generated = dict(zip(smk.params.partitions, smk.input.generated))
    log.info("Table 3: %s real volumes against generated sets %s", smk.input.real, generated)
    out = {"csv": smk.output.csv, "md": smk.output.md, "tex": smk.output.tex}
    frame = run_table3(cfg, smk.input.real, generated, smk.input.i3d, out)
    log.info("\n%s", frame.to_string())


run_step(snakemake, main)  # noqa: F821
