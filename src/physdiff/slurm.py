"""The SLURM path: which rules declare GPUs, where a profile places them, and what a run did.

    python -m physdiff.slurm gpu-rules [--workdir W]          # {rule: declared gpu} as JSON
    python -m physdiff.slurm check-profile profiles/slurm     # exit 1 on a GPU rule not placed
    python -m physdiff.slurm check-run --log L [--retried R]  # sacct against the run's log

`check-run` reads the Snakemake log of a `--profile profiles/slurm` run (each job's rule,
resources and SLURM job ids) and asks `sacct` how each SLURM job ended, in which partition and
with which TRES. It fails unless every job of the DAG completed (the workflow's local rules on
the submit host, every other job through sbatch), every job that declares `gpu=n` ran in the GPU
partition with n GPUs allocated (AllocTRES gres/gpu=n), and no other job ran there or got a GPU.
`.ci/slurm-test` runs it after driving the .test config through the cluster of `.ci/slurm-up`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


# --- the workflow's rules and a profile's placement -------------------------------------------

def rule_resources(workdir: str | Path, snakefile: str | Path = ROOT / "Snakefile") -> dict[str, dict]:
    """{rule: {resource: value}} as the rules declare them (a callable's value is "<callable>"),
    with the workflow parsed in `workdir` (which holds its config/config.yaml), and each rule's
    `retries` under "_retries" and whether it is a local rule under "_local". Changes the
    process's working directory while parsing; run it in a subprocess (`gpu-rules`) from tests."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, Quietness, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(), snakefile=Path(snakefile),
                                workdir=Path(workdir))._workflow
        out = {}
        for rule in workflow.rules:
            declared = {k: ("<callable>" if callable(v) else v) for k, v in rule.resources.items()
                        if not k.startswith("_") and k != "tmpdir"}
            # (workflow.is_local(rule) is true of every rule without a remote executor)
            local = rule.group is None and (rule.name in workflow._localrules or rule.norun)
            out[rule.name] = {**declared, "_retries": rule._restart_times or 0, "_local": local}
        return out


def gpu_rules(resources: dict[str, dict]) -> dict[str, object]:
    """{rule: declared gpu} of the rules that declare a `gpu` resource (other than a literal 0)."""
    return {rule: res["gpu"] for rule, res in resources.items() if "gpu" in res and res["gpu"] != 0}


def read_profile(profile_dir: str | Path) -> dict:
    """A Snakemake profile's config.yaml (YAML anchors resolved)."""
    return yaml.safe_load((Path(profile_dir) / "config.yaml").read_text()) or {}


def placement_problems(profile: dict, gpus: dict[str, object]) -> list[str]:
    """What is wrong with `profile`'s placement of the GPU rules `gpus` ({rule: declared gpu}):
    a GPU rule without a partition and GPU model of its own in set-resources, one left on the
    default (CPU) partition, a GPU model given to a rule that asks for no GPU (sbatch would get
    --gpus=<model>:1), or GPU rules placed on different partitions or models."""
    set_res = profile.get("set-resources") or {}
    default_partition = (profile.get("default-resources") or {}).get("slurm_partition")
    problems, places = [], set()
    for rule in sorted(gpus):
        res = set_res.get(rule) or {}
        missing = [k for k in ("slurm_partition", "gpu_model") if not res.get(k)]
        if missing:
            problems.append(f"GPU rule {rule} (gpu={gpus[rule]}) has no {' or '.join(missing)} in set-resources")
            continue
        if res["slurm_partition"] == default_partition:
            problems.append(f"GPU rule {rule} is placed on the default (CPU) partition {default_partition!r}")
        places.add((res["slurm_partition"], res["gpu_model"]))
    for rule, res in sorted(set_res.items()):
        if rule not in gpus and (res or {}).get("gpu_model"):
            problems.append(f"rule {rule} gets gpu_model in set-resources but declares no gpu")
    if len(places) > 1:
        problems.append(f"the GPU rules are placed on different partitions / models: {sorted(places)}")
    return problems


# --- the executor plugin's job states ----------------------------------------------------------

def normalise_state(state: str) -> str:
    """sacct's State of a job cancelled by someone, "CANCELLED by <uid>", as "CANCELLED"."""
    return "CANCELLED" if re.match(r"CANCELLED\b", state) else state


def tolerate_cancelled_by() -> bool:
    """Make snakemake-executor-plugin-slurm see a cancelled job as failed; True where patched.

    The plugin (2.8.0, the newest on PyPI) reads each job's state from `sacct --format=State`
    and fails a job whose state is in its list, "CANCELLED" among them. But sacct reports a job
    that a user, an admin or a script ended with scancel as "CANCELLED by <uid>", which the plugin
    takes for a job still running: the run then waits for it for ever, and train_prior's
    `retries` never resume it. This wraps the plugin's status query (the module attribute it
    calls) to report such states as "CANCELLED". Where the plugin is missing or has no such
    attribute (another version), nothing changes; .ci/slurm-test's kill-and-resume leg would
    then time out rather than pass."""
    try:
        import snakemake_executor_plugin_slurm as plugin
    except ImportError:
        return False
    original = getattr(plugin, "query_job_status", None)
    if original is None or getattr(original, "physdiff_normalised", False):
        return False

    async def query_job_status(command, logger):
        status, duration = await original(command, logger)
        if status:
            status = {job: normalise_state(state) for job, state in status.items()}
        return status, duration

    query_job_status.physdiff_normalised = True
    plugin.query_job_status = query_job_status
    return True


# --- a run: its log and sacct -----------------------------------------------------------------

@dataclass
class LoggedJob:
    """One job of the DAG as the Snakemake log shows it."""

    jobid: int
    rule: str
    local: bool
    wildcards: str = ""
    resources: dict = field(default_factory=dict)
    slurm_ids: list = field(default_factory=list)  # one per attempt, in order

    @property
    def gpu(self) -> int:
        return int(self.resources.get("gpu", 0) or 0)


_HEADER = re.compile(r"^(local)?rule (\w+):$")
_FIELD = re.compile(r"^\s+(\w+): (.*)$")
_SUBMITTED = re.compile(r"^Job (\d+) has been submitted with SLURM jobid (\d+)")
_TOTAL = re.compile(r"^(\d+) of (\d+) steps \(100%\) done")


def parse_resources(text: str) -> dict:
    """`mem_mb=4000, gpu=2, slurm_partition=gpu` -> {"mem_mb": 4000, "gpu": 2, ...}."""
    out = {}
    for item in text.split(", "):
        key, _, value = item.partition("=")
        out[key.strip()] = int(value) if re.fullmatch(r"-?\d+", value) else value
    return out


def parse_log(text: str) -> tuple[dict[int, LoggedJob], int | None, int | None]:
    """The jobs of a Snakemake log {jobid: LoggedJob}, the DAG's job count from its "Job stats"
    table, and N of its final "N of N steps (100%) done" (None where the run did not finish)."""
    jobs: dict[int, LoggedJob] = {}
    dag_total = done = None
    current: dict | None = None
    in_stats = False
    for line in text.splitlines():
        if line.startswith("Job stats:"):
            in_stats = dag_total is None
            continue
        if in_stats:
            m = re.match(r"^total\s+(\d+)$", line)
            if m:
                dag_total, in_stats = int(m.group(1)), False
            continue
        m = _HEADER.match(line)
        if m:
            current = {"rule": m.group(2), "local": bool(m.group(1))}
            continue
        if current is not None:
            f = _FIELD.match(line)
            if f:
                current[f.group(1)] = f.group(2)
                if f.group(1) == "jobid":
                    jid = int(f.group(2))
                    job = jobs.setdefault(jid, LoggedJob(jid, current["rule"], current["local"]))
                    current["job"] = job
                elif "job" in current and f.group(1) == "wildcards":
                    current["job"].wildcards = f.group(2)
                elif "job" in current and f.group(1) == "resources":
                    current["job"].resources = parse_resources(f.group(2))
                continue
            current = None
        m = _SUBMITTED.match(line)
        if m and int(m.group(1)) in jobs:
            jobs[int(m.group(1))].slurm_ids.append(m.group(2))
        m = _TOTAL.match(line)
        if m and m.group(1) == m.group(2):
            done = int(m.group(2))
    return jobs, dag_total, done


SACCT_FIELDS = ("JobIDRaw", "Partition", "State", "AllocTRES", "Comment", "Elapsed")


def sacct(ids: list[str]) -> dict[str, dict]:
    """{SLURM job id: {field: value}} of the jobs' allocations (sacct -X)."""
    if not ids:
        return {}
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", ",".join(ids), "-o", ",".join(SACCT_FIELDS)],
                         capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        values = line.split("|")
        if len(values) == len(SACCT_FIELDS):
            rows[values[0]] = dict(zip(SACCT_FIELDS, values))
    return rows


def allocated_gpus(tres: str) -> int:
    """gres/gpu=N of an AllocTRES string (0 without)."""
    m = re.search(r"(?:^|,)gres/gpu=(\d+)", tres)
    return int(m.group(1)) if m else 0


def check_run(jobs: dict[int, LoggedJob], dag_total: int | None, done: int | None, rows: dict[str, dict], *,
              gpu_partition: str, local_rules: set[str], retried: set[str] = frozenset()) -> list[str]:
    """The problems of a run (empty: it passed); see the module docstring. `rows` are sacct's
    rows by SLURM job id; `retried`: rules whose jobs may have failed attempts before the last
    (the kill-and-resume leg); everywhere else a job has exactly one SLURM job."""
    problems = []
    if dag_total is None:
        problems.append("the log has no 'Job stats' table")
    elif len(jobs) != dag_total:
        problems.append(f"the log shows {len(jobs)} jobs, the DAG has {dag_total}")
    if done is None or done != dag_total:
        problems.append(f"the run did not report all {dag_total} steps done (last: {done})")
    for job in sorted(jobs.values(), key=lambda j: j.jobid):
        name = f"job {job.jobid} ({job.rule}{' ' + job.wildcards if job.wildcards else ''})"
        if job.local or job.rule in local_rules:
            if job.slurm_ids:
                problems.append(f"{name} is a local rule but went to SLURM")
            if not job.local:
                problems.append(f"{name} is a local rule but the log does not show it as one")
            continue
        if not job.slurm_ids:
            problems.append(f"{name} never went through sbatch")
            continue
        if len(job.slurm_ids) > 1 and job.rule not in retried:
            problems.append(f"{name} took {len(job.slurm_ids)} SLURM jobs {job.slurm_ids}")
        for sid in job.slurm_ids:
            row = rows.get(sid)
            if row is None:
                problems.append(f"{name}: sacct knows no SLURM job {sid}")
                continue
            if not re.fullmatch(rf"rule_{re.escape(job.rule)}(_wildcards_.*)?", row["Comment"]):
                problems.append(f"{name}: SLURM job {sid}'s comment {row['Comment']!r} names another rule")
            state = row["State"].split()[0] if row["State"] else ""
            last = sid == job.slurm_ids[-1]
            if last and state != "COMPLETED":
                problems.append(f"{name}: SLURM job {sid} ended {row['State']}")
            gpus = allocated_gpus(row["AllocTRES"])
            if job.gpu:
                if row["Partition"] != gpu_partition or gpus != job.gpu:
                    problems.append(f"{name} declares gpu={job.gpu} but SLURM job {sid} ran in partition "
                                    f"{row['Partition']!r} with gres/gpu={gpus}")
            elif row["Partition"] == gpu_partition or gpus:
                problems.append(f"{name} declares no GPU but SLURM job {sid} ran in partition "
                                f"{row['Partition']!r} with gres/gpu={gpus}")
    return problems


# --- command line -----------------------------------------------------------------------------

def _rule_resources_subprocess(workdir: Path) -> dict[str, dict]:
    out = subprocess.run([sys.executable, "-m", "physdiff.slurm", "rule-resources", "--workdir", str(workdir)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"could not read the workflow's rules:\n{out.stderr}")
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m physdiff.slurm", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("rule-resources", help="every rule's declared resources, as JSON")
    p.add_argument("--workdir", default=".", help="folder whose config/config.yaml the workflow reads")
    p = sub.add_parser("gpu-rules", help="{rule: declared gpu}, as JSON")
    p.add_argument("--workdir", default=".")
    p = sub.add_parser("check-profile", help="exit 1 where a profile leaves a GPU rule unplaced")
    p.add_argument("profile")
    p.add_argument("--workdir", default=".")
    p = sub.add_parser("check-run", help="check a SLURM run's log against sacct")
    p.add_argument("--log", required=True, help="the run's Snakemake log (.snakemake/log/*.log or its output)")
    p.add_argument("--gpu-partition", default="gpu")
    p.add_argument("--retried", action="append", default=[], help="a rule whose jobs may have been retried")
    p.add_argument("--workdir", default=".")
    args = ap.parse_args(argv)

    if args.cmd == "rule-resources":
        print(json.dumps(rule_resources(args.workdir), sort_keys=True, default=str))
        return 0
    resources = _rule_resources_subprocess(Path(args.workdir))
    if args.cmd == "gpu-rules":
        print(json.dumps(gpu_rules(resources), sort_keys=True))
        return 0
    if args.cmd == "check-profile":
        problems = placement_problems(read_profile(args.profile), gpu_rules(resources))
        for problem in problems:
            print(f"check-profile: {problem}", file=sys.stderr)
        return 1 if problems else 0
    jobs, dag_total, done = parse_log(Path(args.log).read_text())
    ids = [sid for job in jobs.values() for sid in job.slurm_ids]
    rows = sacct(ids)
    local = {rule for rule, res in resources.items() if res["_local"]}
    problems = check_run(jobs, dag_total, done, rows, gpu_partition=args.gpu_partition, local_rules=local,
                         retried=set(args.retried))
    gpu_jobs = [j for j in jobs.values() if j.gpu]
    print(f"check-run: {len(jobs)} jobs in the DAG, {sum(1 for j in jobs.values() if j.slurm_ids)} through sbatch "
          f"({len(ids)} SLURM jobs), local: {', '.join(sorted(j.rule for j in jobs.values() if not j.slurm_ids))}")
    print("check-run: sacct of the jobs that declare gpu:")
    print("  " + "|".join(SACCT_FIELDS) + "|declared gpu")
    for job in sorted(gpu_jobs, key=lambda j: (j.rule, j.wildcards)):
        for sid in job.slurm_ids:
            row = rows.get(sid, {})
            print("  " + "|".join(row.get(f, "?") for f in SACCT_FIELDS) + f"|{job.gpu}")
    partitions = sorted({rows[s]["Partition"] for j in jobs.values() if not j.gpu for s in j.slurm_ids if s in rows})
    print(f"check-run: {len(jobs) - len(gpu_jobs)} jobs declare no GPU; their SLURM jobs ran in {partitions}, "
          f"with gres/gpu {sorted({allocated_gpus(rows[s]['AllocTRES']) for j in jobs.values() if not j.gpu for s in j.slurm_ids if s in rows})}")
    for problem in problems:
        print(f"check-run: FAIL: {problem}", file=sys.stderr)
    print(f"check-run: {'FAILED' if problems else 'passed'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
