"""The documents: results/README.md lists what the rules write, no file names a document the
repository lacks, README.md stays a short manual, and its commands are the ones CI runs."""

import itertools
import json
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# --- (a) every rule output is listed in results/README.md ------------------------------------
#
# The rule. A rule's output pattern counts as listed when some path written in backticks in
# results/README.md covers it:
# - README paths are relative to results/; an output outside results/ is written as it is
#   (relative to the repository root);
# - in a README path, `{a,b}` (with a comma) lists alternatives and `{name}` is a wildcard that
#   stands for one wildcard of the rule or for literal text inside one path segment;
# - a rule wildcard whose constraint is a list of names (`{method,dart|dart_adapt}`) may be
#   written as any one of those names.
# So `recon/mri/{dataset}/{mask}/{method}/{sample}_steps.csv` covers reconstruct_dart_mri's
# steps file, and `prior/stem/scale.json` covers that file of prior_data_stem; a new output
# file, or a renamed folder, fails until the README says what it is.

# The outputs as Snakemake itself resolves them (loops, expand() and f-strings included), read in
# a subprocess so that the API's global state stays out of the test session.
_LOAD_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (ConfigSettings, DeploymentSettings, OutputSettings,
                                      ResourceSettings, StorageSettings, WorkflowSettings)
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(), config_settings=ConfigSettings(),
                      storage_settings=StorageSettings(), workflow_settings=WorkflowSettings(),
                      deployment_settings=DeploymentSettings(), snakefile=Path("Snakefile"),
                      workdir=Path("."))
    rules = {rule.name: [str(out) for out in rule.output] for rule in wf._workflow.rules}
sys.stdout.write("RULES " + json.dumps(rules) + "\\n")
"""

# {name} or {name,constraint}; a constraint may hold one level of braces (a regex quantifier)
WILDCARD = re.compile(r"\{\s*(\w+)\s*(?:,\s*((?:[^{}]|\{[^{}]*\})*))?\}")
NAMES = re.compile(r"[\w\-.]+(?:\|[\w\-.]+)+|[\w\-.]+")


@lru_cache(maxsize=1)
def rule_outputs() -> dict[str, list[str]]:
    run = subprocess.run([sys.executable, "-c", _LOAD_RULES], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RULES ")), None)
    assert line, f"could not load the workflow:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    return json.loads(line.removeprefix("RULES "))


def pattern_instances(pattern: str) -> list[str]:
    """The pattern with each wildcard kept as a marker, or set to one name of its name list."""
    if pattern.startswith("results/"):
        pattern = pattern.removeprefix("results/")
    pieces, choices, last = [], [], 0
    for i, m in enumerate(WILDCARD.finditer(pattern)):
        pieces.append(pattern[last:m.start()])
        marker = f"\x00{i}\x00"
        constraint = (m.group(2) or "").strip()
        names = constraint.split("|") if constraint and NAMES.fullmatch(constraint) else []
        choices.append([marker, *names])
        last = m.end()
    tail = pattern[last:]
    out = []
    for combo in itertools.product(*choices):
        out.append("".join(p + c for p, c in zip(pieces, combo)) + tail)
    return out


def expand_alternatives(path: str) -> list[str]:
    """`a/{x,y}.csv` -> [a/x.csv, a/y.csv]; `{name}` (no comma) stays a wildcard."""
    m = re.search(r"\{([^{}]*,[^{}]*)\}", path)
    if not m:
        return [path]
    return [alt for opt in m.group(1).split(",")
            for alt in expand_alternatives(path[:m.start()] + opt.strip() + path[m.end():])]


def documented_path_regexes(text: str) -> list[re.Pattern]:
    """A regex for every path written in backticks: `{name}` matches one rule wildcard marker or
    literal text inside one segment."""
    wildcard = r"(?:\x00\d+\x00|[^/\x00]+)"
    regexes = []
    for span in re.findall(r"`([^`]+)`", text):
        for token in span.split():
            token = token.strip(",;:()").rstrip("/")
            if "/" not in token and "." not in token:
                continue
            for path in expand_alternatives(token):
                parts = re.split(r"(\{\w+\})", path)
                body = "".join(wildcard if re.fullmatch(r"\{\w+\}", p) else re.escape(p) for p in parts)
                regexes.append(re.compile(body))
    return regexes


def undocumented_outputs(readme_text: str) -> list[str]:
    regexes = documented_path_regexes(readme_text)
    missing = []
    for rule, outputs in sorted(rule_outputs().items()):
        for pattern in outputs:
            if not any(rx.fullmatch(inst) for inst in pattern_instances(pattern) for rx in regexes):
                missing.append(f"{rule}: {pattern}")
    return missing


@pytest.mark.slow
def test_results_readme_lists_every_rule_output():
    outputs = rule_outputs()
    assert "paper_tables" in outputs and "reconstruct_dart_mri" in outputs  # the workflow loaded
    missing = undocumented_outputs((ROOT / "results" / "README.md").read_text())
    assert not missing, "results/README.md does not list these outputs:\n" + "\n".join(missing)


@pytest.mark.slow
def test_results_readme_check_fails_on_an_unlisted_output():
    text = (ROOT / "results" / "README.md").read_text()
    broken = text.replace("figures/figure5.png", "figures/figure_five.png")
    assert "figure5: results/figures/figure5.png" in undocumented_outputs(broken)


def test_pattern_matching_rule():
    rx = documented_path_regexes("`recon/mri/{dataset}/{mask}/{method}/{sample}.{npy,json}`, "
                                 "`tables/table3.md`")
    steps = "results/recon/mri/{dataset,brats|roots}/{mask}/{method,dart|dart_adapt}/{sample,\\d+}"
    covered = lambda p: any(r.fullmatch(i) for i in pattern_instances(p) for r in rx)  # noqa: E731
    assert covered(steps + ".npy") and covered(steps + ".json")
    assert covered("results/recon/mri/brats/{mask}/{method,zero_filled|tv}/0.npy")
    assert not covered(steps + "_steps.csv")  # a wildcard does not swallow a suffix
    assert not covered("results/tables/table4.md")
    assert covered("results/tables/table3.md")


# --- (b) no file refers to a document the repository lacks ------------------------------------
#
# Checked in every tracked text file but this one (whose examples would trip it):
# - markdown links [text](target): the target, relative to the linking file, exists; a
#   `#anchor` into a markdown file names one of its headings (GitHub's heading ids);
# - bare paths ending in `.md`, and bare paths under docs/ or benchmarks/: they exist, relative
#   to the repository root or to the file. Skipped: paths with wildcards ({stage}, *), paths git
#   ignores (outputs such as results/tables/table1.md), in code a string literal that is just a
#   file name (`tmp_path / "t.md"`), which names what the code writes, and a removed file whose
#   commit the same document gives as `git show REV:path`;
# - a section cited by title, `docs/method.md, "DART"`: the page has a heading of that title;
# - the word SPEC, which named a document outside the repository, and "issue N" references to an
#   issue tracker the repository does not carry.

SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()
MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
BARE_PATH = re.compile(r"(?<![\w./\-~$:])((?:docs|benchmarks)/[\w./\-]*[\w\-]|(?:[\w.\-]+/)*[\w\-]+\.md)(?![\w\-{*<])")
SECTION = re.compile(r"(docs/[\w\-]+\.md)[,;]?\s*(?:\\?\"([^\"\\]+)\\?\"|'([^'\\]+)')")
STALE = [(re.compile(r"\bSPEC\b"), "SPEC, a document outside the repository"),
         (re.compile(r"\bissues? #?\d+\b", re.IGNORECASE), "an issue number of a tracker the repository lacks")]


def _git_files(*args: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


@lru_cache(maxsize=1)
def repo_paths() -> frozenset[str]:
    """Files in the working tree that git tracks or would track, and every folder above them."""
    files = {p for p in _git_files("--cached", "--others", "--exclude-standard") if (ROOT / p).exists()}
    folders = {parent.as_posix() for p in files for parent in Path(p).parents}
    return frozenset(files | folders)


def _text(path: str) -> str | None:
    data = (ROOT / path).read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _norm(path: Path) -> str:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                return "../"  # leaves the repository
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts) or "."


@lru_cache(maxsize=None)
def ignored(path: str) -> bool:
    """Whether git ignores `path` (an output of the pipeline or a benchmark, not a document)."""
    return any(subprocess.run(["git", "check-ignore", "-q", "--no-index", p], cwd=ROOT).returncode == 0
               for p in (path, path + "/"))  # a folder pattern (out/) matches only with the slash


def heading_titles(markdown: str) -> set[str]:
    """The titles of a markdown file's headings, code spans unwrapped."""
    return {ln.lstrip("#").strip().replace("`", "") for ln in markdown.splitlines() if re.match(r"#{1,6} ", ln)}


def heading_ids(markdown: str) -> set[str]:
    """GitHub's ids of a markdown file's headings (code fences skipped)."""
    ids, seen, fenced = set(), {}, False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not re.match(r"#{1,6} ", line):
            continue
        title = line.lstrip("#").strip().replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def missing_references(path: str, text: str) -> list[str]:
    """What `path`'s text refers to that the repository lacks, as 'path:line: why'."""
    paths = repo_paths()
    here = Path(path).parent
    problems = []

    def exists(target: str, relative_to_root: bool) -> bool:
        candidates = [_norm(here / target)] + ([_norm(Path(target))] if relative_to_root else [])
        return any(c in paths for c in candidates)

    code = path.endswith((".py", ".smk")) or Path(path).name == "Snakefile"
    historical = set(re.findall(r"\b[0-9a-f]{7,40}:([\w./\-]+)", text))  # git show REV:path
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{lineno}"
        if path.endswith(".md"):
            for target in MD_LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.\-]*:", target):  # http:, mailto:
                    continue
                file, _, anchor = target.partition("#")
                resolved = _norm(here / file) if file else path
                if file and resolved not in paths:
                    problems.append(f"{where}: link to {target}, which is not in the repository")
                elif anchor and resolved.endswith(".md") and \
                        anchor not in heading_ids((ROOT / resolved).read_text()):
                    problems.append(f"{where}: link to {target}, a heading {resolved} lacks")
            line = MD_LINK.sub("", line)  # a link's target is checked above
        for m in BARE_PATH.finditer(line):
            token = m.group(1).rstrip(".")
            if token.startswith("/") or not token:
                continue
            quoted = line[m.start() - 1:m.start()] in "\"'" and line[m.end():m.end() + 1] in "\"'"
            if code and quoted and m.start() > 0 and m.end() < len(line):
                continue
            if token not in historical and not exists(token, relative_to_root=True) \
                    and not ignored(_norm(here / token)) \
                    and not ignored(_norm(Path(token))):
                problems.append(f"{where}: {token} is not in the repository")
        for doc, double, single in SECTION.findall(line):
            title = double or single
            titles = heading_titles((ROOT / doc).read_text()) if doc in paths else set()
            if title not in titles:
                problems.append(f"{where}: {doc} has no section \"{title}\"")
        for rx, why in STALE:
            if rx.search(line):
                problems.append(f"{where}: names {why}")
    return problems


def test_no_file_refers_to_a_missing_document():
    problems = []
    for path in _git_files("--cached"):
        if path == SELF or not (ROOT / path).is_file():
            continue
        text = _text(path)
        if text is not None:
            problems += missing_references(path, text)
    assert not problems, "\n".join(problems)


def test_reference_check_fails_when_it_should():
    broken = ("See [the method](method.md#no-such-heading), [gone](gone.md), docs/nowhere.md,\n"
              "benchmarks/studies/no_study.md and SPEC 4; fixed in issue 12.\n"
              "Fine: [results](results.md#time), [method](method.md#dart), docs/method.md,\n"
              "results/tables/table1.md (an output git ignores), benchmarks/old.py (removed; it\n"
              "lives at commit 1234567: git show 1234567:benchmarks/old.py).\n"
              'As docs/method.md, "DART", says; not docs/method.md, "Nowhere".\n')
    problems = missing_references("docs/example.md", broken)
    expected = ["1: link to method.md#no-such-heading", "1: link to gone.md", "1: docs/nowhere.md",
                "2: benchmarks/studies/no_study.md", "2: names SPEC", "2: names an issue number",
                '6: docs/method.md has no section "Nowhere"']
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected):
        assert problem.startswith(f"docs/example.md:{start}"), (problem, start)
    code = 'write(tmp / "t.md")  # then see notes.md\n'
    assert missing_references("tests/test_example.py", code) == [
        "tests/test_example.py:1: notes.md is not in the repository"]


# --- (c) the README is a manual, and its commands are CI's --------------------------------------

def test_readme_is_a_short_manual():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; measurements belong in docs/results.md"


def test_readme_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = re.search(r'leg "install \+ pytest" bash -c "([^"]+)"', ci).group(1)
    run_command = test_command.replace("-q -e '.[test,slurm,roots]'", "-e '.[roots]'").replace(
        ".venv/bin/pytest", ".venv/bin/snakemake --cores 2")
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", readme, re.S).group(1)
    commands = [ln for ln in block.splitlines() if ln and not ln.startswith("#")]
    assert commands == [run_command, test_command]
