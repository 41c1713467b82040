"""Write the paper's Tables 1 and 2 (csv, md, tex) from every metrics row, ours beside the paper's."""

from physdiff.io import atomic_path
from physdiff.metrics.paper_tables import paper_table, to_latex, to_markdown
from physdiff.metrics.tables import read_rows
from physdiff.workflow import log, run_step

TITLES = {"table1": "Table 1: in distribution, SSIM mean ± std (N)",
          "table2": "Table 2: out of distribution, SSIM mean ± std (N)"}


def main(smk):
    frame = read_rows(smk.input)
    p = smk.params
    labels = {"dart": f"DART (G={p.partitions['mri']}/{p.partitions['stem']})",
              "drift": f"DRIFT (N={p.n_candidates['mri']}/{p.n_candidates['stem']})"}
    for name in ("table1", "table2"):
        table = paper_table(frame, name, labels=labels)
        with atomic_path(smk.output[f"{name}_csv"]) as tmp:
            table.to_csv(tmp, index=False)
        markdown = to_markdown(table, TITLES[name])
        with atomic_path(smk.output[f"{name}_md"]) as tmp:
            tmp.write_text(markdown)
        with atomic_path(smk.output[f"{name}_tex"]) as tmp:
            tmp.write_text(to_latex(table, TITLES[name]))
        log.info("\n%s", markdown)


run_step(snakemake, main)  # noqa: F821
