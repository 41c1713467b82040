"""physdiff.results.Layout: the one copy of the results layout outside the rules, and the rules' own."""

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import SNAKEMAKE, write_test_config

from physdiff.results import Layout

ROOT = Path(__file__).resolve().parents[1]
# pieces of paths under results/ that only Layout (and the rules) may spell out
FRAGMENTS = ("prior/mri/", "prior/stem/", "recon/mri/", "recon/stem/", "data/mri/", "data/stem/",
             "generated/mri", "generated/stem", "checkpoints/mri", "checkpoints/stem", "results/tables",
             "results/figures")
SEARCHED = ("src", "workflow/scripts", "benchmarks", "examples")


def python_files(folder: Path):
    """The .py files under `folder`, not following links (workflow/scripts/physdiff links to src/)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        yield from (Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))


def test_no_copy_of_the_results_layout_outside_layout_and_the_rules():
    owner = ROOT / "src" / "physdiff" / "results.py"
    hits = []
    for folder in SEARCHED:
        for path in python_files(ROOT / folder):
            if path == owner:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if any(fragment in line for fragment in FRAGMENTS):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "results paths spelt out outside physdiff.results.Layout:\n" + "\n".join(hits)


def rule_patterns() -> set[str]:
    """Every quoted results/ path in workflow/rules, braces of expand and f-strings collapsed."""
    patterns = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for text in re.findall(r"""["'](results/[^"']+)["']""", smk.read_text()):
            patterns.add(re.sub(r"\}+", "}", re.sub(r"\{+", "{", text)))
    return patterns


def formatted(patterns: set[str], wildcards: dict) -> set[str]:
    out = set()
    for pattern in patterns:
        try:
            out.add(pattern.format_map(wildcards))
        except (KeyError, IndexError, ValueError, AttributeError):  # a wildcard this case does not name
            continue
    return out


LAY = Layout("results")
# (Layout's path, the wildcards that fill the rule's pattern for it)
CASES = [
    (LAY.mri_split("val"), {}),
    (LAY.mri_subjects(), {}),
    (LAY.roots(), {}),
    (LAY.mri_mask("uniform_R4"), {"kind": "uniform", "R": 4}),
    (LAY.stem_sample("test", "CoPt3_001_0"), {"split": "test", "crystal": "CoPt3", "axis": "001", "k": 0}),
    (LAY.stem_sample("ood", "WC_0001_0"), {"crystal": "WC", "axis": "0001"}),
    (LAY.stem_structure("mp-1234"), {"mp_id": "mp-1234"}),
    (LAY.stem_scale(), {}),
    (LAY.stem_prior_data("train"), {}),
    (LAY.stem_prior_data("val"), {}),
    (LAY.prior_model("mri", 2, 1), {"modality": "mri", "G": 2, "g": 1}),
    (LAY.prior_dir("stem", 2, 0) / "loss.csv", {"modality": "stem", "G": 2, "g": 0}),
    (LAY.checkpoint("stem", 2, 0), {"modality": "stem", "G": 2, "g": 0}),
    (LAY.generated("mri", 2), {"modality": "mri", "G": 2}),
    (LAY.candidates("stem"), {"modality": "stem"}),
    (LAY.tuning("mri", "tv", "uniform_R4"), {"mask": "uniform_R4", "method": "tv"}),
    (LAY.tuning("mri", "dart", "random_R4"), {"modality": "mri", "mask": "random_R4"}),
    (LAY.tuning("mri", "drift"), {"modality": "mri", "mask": "gaussian_R4"}),
    (LAY.tuning("stem", "dart"), {"modality": "stem", "mask": "full"}),
    (LAY.tuning("stem", "drift"), {"modality": "stem", "mask": "full"}),
    (LAY.tuning("stem", "three_pie"), {"method": "three_pie"}),
    (LAY.recon("mri", "roots", "dart", "1", mask="random_R4"),
     {"dataset": "roots", "mask": "random_R4", "method": "dart", "sample": 1}),
    (LAY.recon("mri", "brats", "dart", "0", mask="uniform_R4", suffix="_steps.csv"),
     {"dataset": "brats", "mask": "uniform_R4", "method": "dart", "sample": 0}),
    (LAY.recon("mri", "brats", "dart_selfval", "0", mask="uniform_R4", suffix=".json"),
     {"dataset": "brats", "mask": "uniform_R4", "sample": 0}),
    (LAY.recon("stem", "test", "three_pie", "CoPt3_001_0", suffix=".json"),
     {"split": "test", "method": "three_pie", "sample": "CoPt3_001_0"}),
    (LAY.recon("stem", "ood", "drift", "WC_0001_0"), {"split": "ood", "sample": "WC_0001_0"}),
    (LAY.table("baselines", "csv"), {}),
    (LAY.table("table2", "tex"), {}),
    (LAY.table("table3", "md"), {}),
    (LAY.figure("datasets"), {}),
    (LAY.figure("figure5"), {}),
    (LAY.figure("figure3"), {"figure": "figure3"}),
    (LAY.figure("generated_stem"), {"modality": "stem"}),
]


@pytest.mark.parametrize("path, wildcards", CASES, ids=[str(p.relative_to("results")) for p, _ in CASES])
def test_layout_agrees_with_the_rules_patterns(path, wildcards):
    assert str(path) in formatted(rule_patterns(), wildcards)


def test_a_moved_layout_path_would_not_match_the_rules():
    # the check above can fail: a path the rules do not write matches none of their patterns
    moved = Layout("results").root / "recon" / "mri" / "uniform_R4" / "tuning" / "tv.json"
    assert str(moved) not in formatted(rule_patterns(), {"mask": "uniform_R4", "method": "tv"})


def test_metrics_rows_leave_out_tuning_files_and_stem_samples_list_a_split(tmp_path):
    lay = Layout(tmp_path / "tuning")  # a root that happens to be named like the tuning folders
    rows = [lay.recon("mri", "brats", "tv", "0", mask="uniform_R4", suffix=".json"),
            lay.recon("stem", "test", "dart", "CoPt3_001_0", suffix=".json")]
    for path in [*rows, lay.tuning("mri", "tv", "uniform_R4"), lay.tuning("stem", "drift"),
                 lay.stem_sample("val", "Ni_001_0"), lay.stem_sample("val", "Cu_001_0"), lay.stem_sample("test", "X")]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert lay.metrics_rows() == sorted(rows)
    assert lay.stem_samples("val") == [lay.stem_sample("val", "Cu_001_0"), lay.stem_sample("val", "Ni_001_0")]


@pytest.mark.slow
def test_layout_names_the_files_the_test_config_plans(tmp_path):
    # the jobs of the .test DAG as Snakemake plans them (nothing runs): output file -> rule
    work = write_test_config(tmp_path / "work")
    run = subprocess.run([*SNAKEMAKE, "--directory", str(work), "--cores", "1", "--summary"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    planned = dict(line.split("\t")[0:3:2] for line in run.stdout.splitlines()[1:] if line.count("\t") >= 2)
    lay = Layout("results")
    expected = {
        lay.mri_split("val"): "prepare_mri", lay.roots(): "prepare_roots", lay.mri_mask("uniform_R4"): "make_mask",
        lay.stem_sample("test", "CoPt3_001_0"): "simulate_crystal", lay.stem_scale(): "prior_data_stem",
        lay.stem_prior_data("val"): "prior_data_stem", lay.prior_model("mri", 2, 1): "train_prior",
        lay.generated("stem", 2): "generate", lay.candidates("mri"): "drift_candidates",
        lay.tuning("mri", "tv", "uniform_R4"): "tune_mri_baseline", lay.tuning("mri", "dart", "random_R4"): "tune_dart",
        lay.tuning("stem", "drift"): "tune_drift", lay.tuning("stem", "three_pie"): "tune_stem_baseline",
        lay.recon("mri", "brats", "dart_selfval", "0", mask="random_R4", suffix=".json"): "reconstruct_selfval_mri",
        lay.recon("mri", "roots", "tv", "0", mask="random_R4"): "reconstruct_baseline_mri_roots",
        lay.recon("stem", "ood", "drift", "WC_0001_0"): "reconstruct_drift_stem",
        lay.table("baselines", "md"): "baseline_table", lay.table("table1", "tex"): "paper_tables",
        lay.table("table3", "csv"): "table3", lay.figure("figure4"): "plot_recon", lay.figure("figure5"): "figure5",
        lay.figure("datasets"): "plot_datasets", lay.figure("generated_mri"): "plot_generated",
    }
    assert {str(p): planned.get(str(p)) for p in expected} == {str(p): rule for p, rule in expected.items()}
