"""profiles/slurm places every GPU rule on the GPU partition; the checks of CI's SLURM leg work.

The run itself (the .test DAG through sbatch, sacct, kill and resume) is .ci/slurm-test, which
needs root and a cluster; these tests need neither.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from physdiff.slurm import LoggedJob, allocated_gpus, check_run, gpu_rules, parse_log, placement_problems, read_profile

from conftest import ROOT, write_test_config


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    """Every rule's declared resources, parsed by Snakemake (in a subprocess: it changes directory)."""
    work = write_test_config(tmp_path_factory.mktemp("rules"))
    out = subprocess.run([sys.executable, "-m", "physdiff.slurm", "rule-resources", "--workdir", str(work)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_gpu_rule_is_placed_by_the_slurm_profile(rules):
    gpus = gpu_rules(rules)
    # the GPU rules as of the SLURM leg's introduction; a new one must be placed as well (the check below)
    assert {"train_prior", "generate", "generate_plain", "drift_candidates", "tune_dart", "reconstruct_dart_mri",
            "reconstruct_dart_stem", "table3", "figure5"} <= set(gpus)
    profile = read_profile(ROOT / "profiles" / "slurm")
    assert placement_problems(profile, gpus) == []
    placed = profile["set-resources"]
    assert {placed[r]["slurm_partition"] for r in gpus} != {profile["default-resources"]["slurm_partition"]}


def test_the_check_catches_a_forgotten_gpu_rule(rules):
    gpus = gpu_rules(rules)
    profile = read_profile(ROOT / "profiles" / "slurm")
    forgot = {**profile, "set-resources": {k: v for k, v in profile["set-resources"].items() if k != "tune_dart"}}
    assert placement_problems(forgot, gpus) == ["GPU rule tune_dart (gpu=<callable>) has no slurm_partition or "
                                                "gpu_model in set-resources"]
    cpu_rule = {**profile, "set-resources": {**profile["set-resources"], "tune_drift": {"gpu_model": "a100"}}}
    assert placement_problems(cpu_rule, gpus) == ["rule tune_drift gets gpu_model in set-resources but declares no gpu"]
    on_cpu = {**profile, "set-resources": {**profile["set-resources"],
                                           "table3": {"slurm_partition": "cpu", "gpu_model": "a100"}}}
    problems = placement_problems(on_cpu, gpus)
    assert "GPU rule table3 is placed on the default (CPU) partition 'cpu'" in problems
    assert any("different partitions" in p for p in problems)


def test_train_prior_is_retried_and_only_fetches_are_local(rules):
    assert rules["train_prior"]["_retries"] == 2
    assert {r for r, res in rules.items() if res["_local"]} <= {"all", "fetch_i3d", "fetch_materials_project"}


def test_the_ci_profile_changes_only_the_sites_names():
    """.ci/slurm-profile is a workflow profile over profiles/slurm: its default-resources replace
    the profile's whole, so they must differ only in the site's names; it sets no set-resources (CI
    tests profiles/slurm's GPU placement as is); and it stands in for profiles/default."""
    site, ci = read_profile(ROOT / "profiles" / "slurm"), read_profile(ROOT / ".ci" / "slurm-profile")
    default = read_profile(ROOT / "profiles" / "default")
    names = {"slurm_account", "slurm_partition"}
    assert {k: v for k, v in ci["default-resources"].items() if k not in names} == \
        {k: v for k, v in site["default-resources"].items() if k not in names}
    assert ci["default-resources"]["slurm_partition"] == "cpu" and "set-resources" not in ci
    assert {k: ci.get(k) for k in default} == default


LOG = """\
Job stats:
job         count
--------  -------
all             1
table3          1
tune_drift      1
total           3

[Sat Dec  5 22:09:25 2026]
rule table3:
    input: results/generated/mri/G1.npy
    output: results/tables/table3.csv
    jobid: 2
    resources: mem_mb=16000, mem_mib=15259, tmpdir=<TBD>, gpu=1, runtime=240, slurm_partition=gpu, gpu_model=a100
Shell command: None
Job 2 has been submitted with SLURM jobid 17 (log: x/17.log).
[Sat Dec  5 22:09:25 2026]
rule tune_drift:
    output: results/recon/mri/tuning/drift.json
    jobid: 3
    wildcards: modality=mri
    resources: mem_mb=4000, slurm_partition=cpu, slurm_account=ci, runtime=120
Shell command: None
Job 3 has been submitted with SLURM jobid 18 (log: x/18.log).
[Sat Dec  5 22:09:30 2026]
Finished jobid: 2 (Rule: table3)
1 of 3 steps (33%) done
Finished jobid: 3 (Rule: tune_drift)
2 of 3 steps (67%) done
[Sat Dec  5 22:09:42 2026]
localrule all:
    input: results/tables/table3.csv
    jobid: 0
    resources: tmpdir=/tmp
Finished jobid: 0 (Rule: all)
3 of 3 steps (100%) done
"""


def rows(**changes):
    base = {"17": {"JobIDRaw": "17", "Partition": "gpu", "State": "COMPLETED", "Elapsed": "00:00:09",
                   "AllocTRES": "billing=1,cpu=2,gres/gpu=1,node=1", "Comment": "rule_table3"},
            "18": {"JobIDRaw": "18", "Partition": "cpu", "State": "COMPLETED", "Elapsed": "00:00:05",
                   "AllocTRES": "billing=1,cpu=1,node=1", "Comment": "rule_tune_drift_wildcards_mri"}}
    for sid, fields in changes.items():
        base[sid.lstrip("_")] = {**base[sid.lstrip("_")], **fields}
    return base


def test_parse_log_reads_jobs_resources_and_slurm_ids():
    jobs, total, done = parse_log(LOG)
    assert (total, done) == (3, 3)
    assert jobs[2] == LoggedJob(2, "table3", False, "", jobs[2].resources, ["17"]) and jobs[2].gpu == 1
    assert jobs[3].wildcards == "modality=mri" and jobs[3].gpu == 0 and jobs[3].slurm_ids == ["18"]
    assert jobs[0].local and jobs[0].slurm_ids == []
    assert allocated_gpus("billing=1,cpu=1,gres/gpu:a100=2,gres/gpu=2,node=1") == 2 and allocated_gpus("cpu=1") == 0


def check(log=LOG, **changes):
    return check_run(*parse_log(log), rows(**changes), gpu_partition="gpu", local_rules={"all"})


def test_check_run_passes_a_run_that_placed_everything():
    assert check() == []


@pytest.mark.parametrize("changes, problem", [
    ({"_17": {"Partition": "cpu"}}, "job 2 (table3) declares gpu=1 but SLURM job 17 ran in partition 'cpu' with gres/gpu=1"),
    ({"_17": {"AllocTRES": "cpu=1"}}, "job 2 (table3) declares gpu=1 but SLURM job 17 ran in partition 'gpu' with gres/gpu=0"),
    ({"_18": {"Partition": "gpu"}}, "declares no GPU but SLURM job 18 ran in partition 'gpu'"),
    ({"_18": {"AllocTRES": "cpu=1,gres/gpu=1"}}, "declares no GPU but SLURM job 18 ran in partition 'cpu' with gres/gpu=1"),
    ({"_18": {"State": "CANCELLED by 0"}}, "SLURM job 18 ended CANCELLED by 0"),
    ({"_18": {"Comment": "rule_tune_dart_wildcards_mri"}}, "names another rule"),
])
def test_check_run_fails_where_sacct_disagrees(changes, problem):
    assert any(problem in p for p in check(**changes)), check(**changes)


def test_check_run_fails_an_unfinished_run_or_a_job_outside_slurm():
    assert any("did not report all 3 steps" in p for p in check(LOG.replace("3 of 3 steps (100%) done", "")))
    assert any("never went through sbatch" in p for p in check(LOG.replace("Job 3 has been submitted", "Job 9 was")))
    retried = LOG.replace("Job 2 has been submitted with SLURM jobid 17 (log: x/17.log).",
                          "Job 2 has been submitted with SLURM jobid 16 (log: x/16.log).\n"
                          "Trying to restart job 2.\nJob 2 has been submitted with SLURM jobid 17 (log: x/17.log).")
    first = {"JobIDRaw": "16", "Partition": "gpu", "State": "CANCELLED by 0", "Elapsed": "00:00:03",
             "AllocTRES": "cpu=2,gres/gpu=1", "Comment": "rule_table3"}
    jobs, total, done = parse_log(retried)
    assert jobs[2].slurm_ids == ["16", "17"]
    assert check_run(jobs, total, done, {**rows(), "16": first}, gpu_partition="gpu", local_rules={"all"},
                     retried={"table3"}) == []
    assert any("took 2 SLURM jobs" in p for p in check_run(jobs, total, done, {**rows(), "16": first},
                                                            gpu_partition="gpu", local_rules={"all"}))


def test_a_job_cancelled_by_someone_counts_as_cancelled(monkeypatch):
    """sacct says "CANCELLED by <uid>" after scancel; the SLURM plugin only knows "CANCELLED" and
    would wait for the job for ever. The workflow's shim (common.smk) wraps its status query."""
    import asyncio
    import logging

    plugin = pytest.importorskip("snakemake_executor_plugin_slurm")
    from physdiff.slurm import normalise_state, tolerate_cancelled_by

    assert normalise_state("CANCELLED by 0") == "CANCELLED" and normalise_state("CANCELLED") == "CANCELLED"
    assert normalise_state("COMPLETED") == "COMPLETED" and normalise_state("CANCELLEDX") == "CANCELLEDX"
    monkeypatch.setattr(plugin, "query_job_status", plugin.job_status_query.query_job_status)
    sacct = "printf '90|CANCELLED by 0\\n91|COMPLETED\\n92|RUNNING\\n'"
    log = logging.getLogger("test")
    before, _ = asyncio.run(plugin.query_job_status(sacct, log))
    assert before["90"] == "CANCELLED by 0"  # what the plugin alone compares with its fail states
    assert tolerate_cancelled_by() and not tolerate_cancelled_by()  # once only
    after, _ = asyncio.run(plugin.query_job_status(sacct, log))
    assert after == {"90": "CANCELLED", "91": "COMPLETED", "92": "RUNNING"}
