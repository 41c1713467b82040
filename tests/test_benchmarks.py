"""benchmarks/: every kept script starts and explains itself; the cheap ones run at their smallest setting.

They print figures rather than assert them; what they measure needs a finished run (or a GPU), so
most are checked here only through `--help`. benchmarks/adapt.py --smoke runs in test_adapt.py.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
# the durable benchmarks (speed, memory, quality of the product); one-off studies live in studies/
KEPT = ["adapt", "cs_vs_bart", "cuda_paths", "fvd", "mri_baselines", "multislice", "partition_memory", "prior",
        "prior_compute", "prior_quality", "py4dstem_check", "real_mri", "recon", "rule_times", "sparse_sweep",
        "stem_batch"]  # py4dstem_worker.py is py4dstem_check's worker, not a command
SLOW_TO_IMPORT = {"cuda_paths", "multislice"}  # abTEM and its dask stack: about 10 s to start


def run(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW_TO_IMPORT else s
                                    for s in KEPT])
def test_help_says_what_it_measures_and_how_to_run_it(script):
    out = run(script, "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"benchmarks/{script}.py" in out.stdout  # the docstring's example command, shown in full
    assert len(out.stdout.splitlines()) > 10


def test_every_durable_benchmark_is_checked_here():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")}
    assert set(KEPT) <= scripts
    assert not {p.stem for p in (BENCHMARKS / "studies").glob("*.py")} & set(KEPT)


def test_rule_times_sums_each_rules_jobs_from_a_log_and_its_benchmark_files(tmp_path):
    log = tmp_path / ".snakemake" / "log" / "2026-11-28T100000.snakemake.log"
    log.parent.mkdir(parents=True)
    log.write_text("\n".join([
        "[Sat Nov 28 10:00:00 2026]", "rule train_prior:", "    jobid: 1",
        "    benchmark: results/benchmarks/a.tsv",
        "[Sat Nov 28 10:00:00 2026]", "rule train_prior:", "    jobid: 2",
        "    benchmark: results/benchmarks/b.tsv",
        "[Sat Nov 28 10:10:00 2026]", "Finished jobid: 1 (Rule: train_prior)",
        "[Sat Nov 28 10:20:00 2026]", "Finished jobid: 2 (Rule: train_prior)", ""]))
    (tmp_path / "results" / "benchmarks").mkdir(parents=True)
    for name, seconds in (("a", 600), ("b", 1200)):
        (tmp_path / "results" / "benchmarks" / f"{name}.tsv").write_text(
            f"s\th:m:s\tmax_rss\tcpu_time\n{seconds}\t0:10:00\t250\t{seconds / 2}\n")
    out = run("rule_times", "--root", str(tmp_path))
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("train_prior"))
    assert row.split()[1:6] == ["2", "1800", "1200", "900", "250"]  # jobs, sum s, max s, cpu s, RSS MB
    assert "run from first job start to last finish: 1200 s" in out.stdout


def test_fvd_times_both_forms_and_finds_them_equal():
    out = run("fvd", "--n", "4", "--dim", "6", "--boot", "3", "--sets", "1")
    assert out.returncode == 0, out.stderr
    difference = float(out.stdout.strip().splitlines()[-1].rsplit(" ", 1)[1])
    assert difference < 1e-6


def test_prior_quality_scores_given_volumes_against_real_ones(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "real.npy", rng.random((3, 4, 16, 16), np.float32))
    np.save(tmp_path / "flat.npy", np.full((3, 4, 16, 16), 0.5, np.float32))
    out = run("prior_quality", "--real", str(tmp_path / "real.npy"), "--generated", str(tmp_path / "flat.npy"))
    assert out.returncode == 0, out.stderr
    flat = next(line for line in out.stdout.splitlines() if "flat.npy" in line and line.startswith("| /"))
    cells = [c.strip() for c in flat.strip("|").split("|")]
    assert cells[2] == "0.5000" and float(cells[6]) == 0.0  # background 0.5, no spread across volumes


@pytest.mark.slow
def test_mri_baselines_runs_on_one_small_phantom():
    out = run("mri_baselines", "--n-volumes", "1", "--slices", "2", "--size", "16", "--mask", "uniform")
    assert out.returncode == 0, out.stderr
    for method in ("zero_filled", "cs_l1_wavelet", "tv", "projection"):
        assert f"uniform  {method}" in out.stdout
