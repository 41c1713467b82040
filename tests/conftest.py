"""Shared fixtures: the tiny .test config run end to end once per test session."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


def write_test_config(work: Path, overrides: dict | None = None) -> Path:
    """A working directory holding .test/config/config.yaml, with `overrides` merged one level deep."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text())
    for key, value in (overrides or {}).items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    (work / "config").mkdir()
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return work


@pytest.fixture(scope="session")
def test_config_run(tmp_path_factory):
    """(working directory, CompletedProcess) of `snakemake --cores 2` on the .test config: every rule.

    Run once and shared, so the end-to-end checks and the report build cost one pipeline run.
    """
    work = write_test_config(tmp_path_factory.mktemp("test_config_run"))
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(work), "--cores", "2", "--quiet", "rules"],
        capture_output=True, text=True, timeout=1500,
    )
    return work, run
