"""Gather per-sample metrics rows into tidy tables and the paper-style Markdown summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from physdiff.errors import InputError

IN_DISTRIBUTION = {"brats": "MRI (BraTS-like)", "cubic": "4D-STEM (cubic)"}
OUT_OF_DISTRIBUTION = {"roots": "MRI OOD (roots)", "hexagonal": "4D-STEM OOD (hexagonal)"}


def read_rows(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Read metrics rows (one JSON object per file) into one tidy frame."""
    rows = []
    for path in paths:
        try:
            rows.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: cannot read a metrics row ({exc})") from None
    if not rows:
        raise InputError("no metrics rows to tabulate")
    frame = pd.DataFrame(rows)
    if "diverged" not in frame:
        frame["diverged"] = False
    return frame


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of SSIM and PSNR, N, diverged count and mean wall time per group.

    Iterative 4D-STEM rows carry the SSIM of their starting guess (`ssim_start`); these become
    a `naive_start` pseudo-method, so the table shows what each solver gained.
    """
    if "ssim_start" in frame:
        start = frame.dropna(subset=["ssim_start"]).drop_duplicates(["dataset", "sample", "mask"])
        start = start.assign(method="naive_start", ssim=start.ssim_start, psnr=float("nan"), wall_s=0.0, diverged=False)
        frame = pd.concat([frame, start], ignore_index=True)
    keys = ["modality", "dataset", "mask", "method"]
    grouped = frame.groupby(keys, sort=True)
    return grouped.agg(
        ssim_mean=("ssim", "mean"), ssim_std=("ssim", "std"), psnr_mean=("psnr", "mean"),
        n=("ssim", "size"), diverged=("diverged", "sum"), wall_s=("wall_s", "mean"),
    ).reset_index()


METHOD_ORDER = ["zero_filled", "cs_l1_wavelet", "tv", "projection",
                "naive_start", "three_pie", "torchslice", "sparse_decomposition"]


def _cell(row) -> str:
    text = f"{row.ssim_mean:.3f}" + ("" if pd.isna(row.ssim_std) else f" ± {row.ssim_std:.3f}") + f" (N={row.n})"
    return text + (f", {int(row.diverged)} diverged" if row.diverged else "")


def markdown_table(summary: pd.DataFrame, datasets: dict[str, str], methods: Sequence[str] | None = None) -> str:
    """Rows are methods; columns are dataset x mask; cells are mean ± std SSIM (N)."""
    part = summary[summary.dataset.isin(datasets)]
    if part.empty:
        return "_no results_\n"
    columns = [(d, m) for d in datasets for m in sorted(part[part.dataset == d]["mask"].unique())]
    methods = methods or sorted(set(part.method), key=lambda m: (METHOD_ORDER + [m]).index(m))
    lines = ["| method | " + " | ".join(f"{datasets[d]} {m}" for d, m in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for method in methods:
        cells = []
        for d, m in columns:
            hit = part[(part.dataset == d) & (part["mask"] == m) & (part.method == method)]
            cells.append(_cell(hit.iloc[0]) if len(hit) else "")
        if any(cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def baseline_markdown(summary: pd.DataFrame) -> str:
    """Table 1 and Table 2 layouts (in distribution, out of distribution) for the baselines."""
    return (
        "# Classical baselines: SSIM, mean ± std over test samples (N)\n\n"
        "MRI: mean of per-slice SSIMs of the magnitude. 4D-STEM: SSIM of the phase projection.\n\n"
        "## In distribution (Table 1 layout)\n\n" + markdown_table(summary, IN_DISTRIBUTION)
        + "\n## Out of distribution (Table 2 layout)\n\n" + markdown_table(summary, OUT_OF_DISTRIBUTION)
    )
