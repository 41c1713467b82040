"""The paper's Tables 1 (in distribution) and 2 (out of distribution): ours beside the paper's values.

Rows are methods, columns dataset x mask, cells mean ± std SSIM with N; the paper's value
(docs/method.md, "The paper's figures": one MRI and one 4D-STEM column per table) stands in its
own columns, for comparing shapes, never as a number we produced.
"""

from __future__ import annotations

import pandas as pd

from physdiff.metrics.tables import IN_DISTRIBUTION, OUT_OF_DISTRIBUTION, summarise

LABELS = {
    "zero_filled": "zero-filled",
    "cs_l1_wavelet": "CS L1-wavelet",
    "tv": "TV",
    "projection": "projection-based (re-impl.)",
    "naive_start": "start (V = 0)",
    "three_pie": "3PIE (re-impl.)",
    "torchslice": "Torchslice (re-impl.)",
    "sparse_decomposition": "sparse decomposition (re-impl.)",
    "drift_physics_only": "DRIFT's physics-only twin",
    "dart": "DART",
    "dart_adapt": "DART + adaptation (ours)",
    "dart_selfval": "DART, self-validated (ours)",
    "drift": "DRIFT",
}
ORDER = list(LABELS)

# docs/method.md, "The paper's figures": mean SSIM as the paper reports it (MRI column, 4D-STEM column).
PAPER = {
    "table1": {"dart": (0.968, 0.607), "drift": (0.938, 0.899), "projection": (0.844, None), "cs_l1_wavelet": (0.804, None),
               "tv": (0.803, None), "sparse_decomposition": (None, 0.831), "three_pie": (None, 0.887),
               "torchslice": (None, 0.823)},
    "table2": {"dart": (0.813, 0.588), "drift": (0.750, 0.981), "projection": (0.611, None), "cs_l1_wavelet": (0.676, None),
               "tv": (0.577, None), "sparse_decomposition": (None, 0.977), "three_pie": (None, 0.953),
               "torchslice": (None, 0.573)},
}
DATASETS = {"table1": IN_DISTRIBUTION, "table2": OUT_OF_DISTRIBUTION}


def _cell(row) -> str:
    std = "" if pd.isna(row.ssim_std) else f" ± {row.ssim_std:.3f}"
    return f"{row.ssim_mean:.3f}{std} (N={row.n})" + (f", {int(row.diverged)} diverged" if row.diverged else "")


def paper_table(frame: pd.DataFrame, table: str, *, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """One table as a frame: a `method` column, one column per dataset x mask, and the paper's columns."""
    labels = {**LABELS, **(labels or {})}
    summary = summarise(frame)
    datasets = DATASETS[table]
    part = summary[summary.dataset.isin(datasets)]
    columns = [(d, m) for d in datasets for m in sorted(part[part.dataset == d]["mask"].unique())]
    methods = sorted(set(part.method), key=lambda m: (ORDER + [m]).index(m))
    records = []
    for method in methods:
        record = {"method": labels.get(method, method)}
        for d, m in columns:
            hit = part[(part.dataset == d) & (part["mask"] == m) & (part.method == method)]
            record[f"{datasets[d]} {m}"] = _cell(hit.iloc[0]) if len(hit) else ""
        paper = PAPER[table].get(method, (None, None))
        record["paper MRI"] = "" if paper[0] is None else f"{paper[0]:.3f}"
        record["paper 4D-STEM"] = "" if paper[1] is None else f"{paper[1]:.3f}"
        records.append(record)
    return pd.DataFrame(records)


def to_markdown(table: pd.DataFrame, title: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(table.columns) + " |", "|---" * len(table.columns) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str) -> str:
    """A booktabs tabular; ± becomes $\\pm$."""
    esc = lambda s: str(s).replace("±", "$\\pm$").replace("_", "\\_").replace("%", "\\%")
    head = " & ".join(esc(c) for c in table.columns)
    body = "\n".join(" & ".join(esc(v) for v in row) + " \\\\" for row in table.itertuples(index=False))
    return ("\\begin{table}\n\\centering\n\\caption{" + esc(caption) + "}\n\\begin{tabular}{l"
            + "l" * (len(table.columns) - 1) + "}\n\\toprule\n" + head + " \\\\\n\\midrule\n" + body
            + "\n\\bottomrule\n\\end{tabular}\n\\end{table}\n")


def main(argv: list[str] | None = None) -> int:
    """Print Tables 1 and 2 from every metrics row of a run's results folder (complete or not)."""
    import argparse

    from physdiff.metrics.tables import read_rows
    from physdiff.results import Layout

    ap = argparse.ArgumentParser(description="Tables 1 and 2 from the metrics rows a run has written so far, "
                                 "e.g. while it is still going (the paper_tables rule waits for all).")
    ap.add_argument("results", nargs="?", default="results", help="the run's results folder (default: results)")
    args = ap.parse_args(argv)
    frame = read_rows(Layout(args.results).metrics_rows())
    for name, title in (("table1", "Table 1: in distribution"), ("table2", "Table 2: out of distribution")):
        print(to_markdown(paper_table(frame, name), f"{title}, SSIM mean ± std (N)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
