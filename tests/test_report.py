"""The HTML report of the .test run: Table 3, Figure 5 and every captioned result in one file."""

import subprocess

import pandas as pd
import pytest
from conftest import ROOT, SNAKEMAKE


@pytest.mark.slow
def test_table3_and_figure5_of_the_test_run(test_config_run):
    work, run = test_config_run
    assert run.returncode == 0, run.stderr[-4000:]
    table3 = pd.read_csv(work / "results/tables/table3.csv")
    i3d = table3[table3.metric == "FVD-i3D"]
    assert set(i3d.G) == {1, 2} and (i3d.status == "ok").all() and i3d.value.notna().all()
    # no VideoMAE checkpoint in the .test config: the cell names the key, never a number
    videomae = table3[table3.metric == "FVD-VideoMAE"]
    assert videomae.value.isna().all() and videomae.status.str.contains("metrics.videomae_checkpoint").all()
    figure5 = pd.read_csv(work / "results/figures/figure5.csv")
    steps = figure5[figure5.panel == "steps"]
    assert set(steps.method) == {"vanilla", "dart", "drift"} and steps.ssim.notna().all()
    assert (figure5[figure5.panel != "steps"].max_rss_mb > 0).all()
    assert (work / "results/figures/figure5.png").stat().st_size > 10_000


@pytest.mark.slow
def test_report_builds_from_the_test_run(test_config_run):
    work, run = test_config_run
    assert run.returncode == 0, run.stderr[-4000:]
    report = work / "report.html"
    build = subprocess.run([*SNAKEMAKE, "--directory", str(work), "--report", str(report)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    html = report.read_text(errors="replace")
    # Tables 1-3, Figures 3-5, the dataset and generated-volume figures, in their categories
    for name in ("table1.csv", "table2.csv", "table3.csv", "figure3.png", "figure4.png", "figure5.png",
                 "figure5.csv", "datasets.png", "generated_mri.png", "generated_stem.png"):
        assert name in html, name
    for category in ("Tables", "Reconstructions", "Performance", "Prior", "Data"):
        assert category in html, category
    # every caption is rendered into the report (its opening words, which hold no markup)
    for caption in sorted((ROOT / "workflow" / "report").glob("*.rst")):
        assert " ".join(caption.read_text().split()[:4]) in html, caption.name
