"""Score the generated MRI volumes against the real test volumes: Table 3 as csv, markdown and LaTeX."""

from physdiff.metrics.table3 import run_table3
from physdiff.workflow import log, run_step


def main(smk):
    cfg = {"metrics": smk.params.metrics, "seed": smk.params.seed}
    p = smk.params
    # each set keyed by (G, seam mode); G = 1 has no seams to blend
    generated = {(G, p.seam if G >= 2 else "none"): path for G, path in zip(p.partitions, smk.input.generated)}
    plain = [G for G in p.partitions if G >= 2 and p.seam != "none"]
    generated.update({(G, "none"): path for G, path in zip(plain, smk.input.plain)})
    log.info("Table 3: %s real volumes against generated sets %s", smk.input.real, generated)
    out = {"csv": smk.output.csv, "md": smk.output.md, "tex": smk.output.tex}
    frame = run_table3(cfg, smk.input.real, generated, smk.input.i3d, out)
    log.info("\n%s", frame.to_string())


run_step(snakemake, main)  # noqa: F821
