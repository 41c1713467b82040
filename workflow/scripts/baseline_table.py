"""Gather the baselines' metrics rows into the baselines table (csv and markdown)."""

from physdiff.io import atomic_path
from physdiff.metrics.tables import baseline_markdown, read_rows, summarise
from physdiff.workflow import log, run_step


def main(smk):
    frame = read_rows(smk.input)
    with atomic_path(smk.output.csv) as tmp:
        frame.to_csv(tmp, index=False)
    markdown = baseline_markdown(summarise(frame))
    with atomic_path(smk.output.md) as tmp:
        tmp.write_text(markdown)
    log.info("\n%s", markdown)


run_step(snakemake, main)  # noqa: F821
