"""Per-rule wall time, CPU time and memory of one Snakemake run, from its log and benchmark files.

    python benchmarks/rule_times.py [--log .snakemake/log/<newest>.snakemake.log [LOG ...]]

Reads the run's log (`.snakemake/log/`, the newest by default) for each job's rule, start and
finish time and benchmark file, and the benchmark files (`results/benchmarks/`, written by the
`benchmark:` directive) for each job's seconds, CPU seconds and peak RSS. Prints one row per
rule: jobs, summed and largest job wall time, summed CPU time, largest peak RSS, and the minutes
of the run (from its first job) in which the rule's first job started and its last one ended;
then the run's total wall time. Jobs that a later run re-executed report that run's benchmark.

Several logs (oldest first) are one run that was interrupted and resumed: a job a later log ran
again counts once, as that log ran it; minutes count only the time the logs' jobs ran, with the
pause between two logs left out, and the total is the sum of each log's first-start-to-last-end.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
BENCH = re.compile(r"^\s+benchmark: (\S+)$")
FINISH = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def parse_log(path: Path) -> dict[int, dict]:
    """jobid -> {rule, start, end, benchmark} from one Snakemake log."""
    jobs: dict[int, dict] = {}
    stamp = current = None
    for line in path.read_text().splitlines():
        if m := STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := START.match(line):
            current = {"rule": m.group(1), "start": stamp, "end": None, "benchmark": None}
        elif current is not None and (m := JOBID.match(line)):
            jobs[int(m.group(1))] = current
        elif current is not None and (m := BENCH.match(line)):
            current["benchmark"] = m.group(1)
        elif m := FINISH.match(line):
            job = jobs.get(int(m.group(1)))
            if job is not None:
                job["end"] = stamp
    return jobs


def read_benchmark(path: Path) -> dict | None:
    """The last row of a benchmark TSV (s, cpu_time, max_rss in MB), or None where it is missing.

    A column Snakemake could not sample ("-", a job that ended before the first sample) reads 0.
    """
    if not path.is_file():
        return None
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    if not rows:
        return None

    def number(key):
        try:
            return float(rows[-1][key])
        except (KeyError, ValueError):
            return 0.0

    return {"s": number("s"), "cpu": number("cpu_time"), "rss": number("max_rss")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", type=Path, nargs="+",
                    help="one or more .snakemake/log/*.snakemake.log, oldest first (default: the newest)")
    ap.add_argument("--root", type=Path, default=Path("."), help="the working directory of that run")
    args = ap.parse_args(argv)
    logs = args.log
    if not logs:
        found = sorted((args.root / ".snakemake" / "log").glob("*.snakemake.log"))
        if not found:
            sys.exit(f"no Snakemake log under {args.root / '.snakemake' / 'log'}; run the pipeline first or pass --log")
        logs = found[-1:]
    jobs: dict = {}
    offset = 0.0  # minutes of run time before this log
    for log in logs:
        if not log.is_file():
            sys.exit(f"--log {log}: no such file")
        parsed = parse_log(log)
        if not parsed:
            sys.exit(f"{log}: no jobs found (is it a Snakemake log?)")
        t0 = min(j["start"] for j in parsed.values() if j["start"])
        t_end = max((j["end"] for j in parsed.values() if j["end"]), default=t0)
        for jobid, job in parsed.items():
            job["start_min"] = offset + (job["start"] - t0).total_seconds() / 60
            job["end_min"] = None if job["end"] is None else offset + (job["end"] - t0).total_seconds() / 60
            jobs[job["benchmark"] or (str(log), jobid)] = job
        offset += (t_end - t0).total_seconds() / 60
    per_rule: dict[str, dict] = defaultdict(lambda: {"n": 0, "done": 0, "wall": 0.0, "max": 0.0, "cpu": 0.0,
                                                     "rss": 0.0, "first": None, "last": None})
    for job in jobs.values():
        r = per_rule[job["rule"]]
        r["n"] += 1
        if job["end"] is None:
            continue
        r["done"] += 1
        bench = read_benchmark(args.root / job["benchmark"]) if job["benchmark"] else None
        wall = bench["s"] if bench else (job["end"] - job["start"]).total_seconds()
        r["wall"] += wall
        r["max"] = max(r["max"], wall)
        if bench:
            r["cpu"] += bench["cpu"]
            r["rss"] = max(r["rss"], bench["rss"])
        start, end = job["start_min"], job["end_min"]
        r["first"] = start if r["first"] is None else min(r["first"], start)
        r["last"] = end if r["last"] is None else max(r["last"], end)
    print(f"{', '.join(map(str, logs))}: {len(jobs)} jobs, {sum(r['done'] for r in per_rule.values())} finished")
    head = f"{'rule':28s} {'jobs':>5s} {'sum s':>8s} {'max s':>7s} {'cpu s':>8s} {'RSS MB':>7s} {'from min':>8s} {'to min':>7s}"
    print(head)
    print("-" * len(head))
    for name, r in sorted(per_rule.items(), key=lambda kv: -kv[1]["wall"]):
        span = (f"{r['first']:8.1f} {r['last']:7.1f}" if r["first"] is not None else f"{'-':>8s} {'-':>7s}")
        jobs_done = f"{r['done']}" if r["done"] == r["n"] else f"{r['done']}/{r['n']}"
        print(f"{name:28s} {jobs_done:>5s} {r['wall']:8.0f} {r['max']:7.0f} {r['cpu']:8.0f} {r['rss']:7.0f} {span}")
    total = sum(r["wall"] for r in per_rule.values())
    what = "run from first job start to last finish" + (f", summed over {len(logs)} logs" if len(logs) > 1 else "")
    print(f"summed job wall time {total:.0f} s ({total / 60:.1f} min); {what}: {offset * 60:.0f} s ({offset:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
