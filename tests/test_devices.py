"""Local multi-GPU runs: concurrent jobs that ask for GPUs get distinct devices (no GPU needed)."""

import logging
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

import physdiff.devices as devices
from physdiff.devices import claim_gpus, visible_gpus
from physdiff.workflow import use_own_gpus


@pytest.fixture(autouse=True)
def release_locks():
    """Each test's claims end with it, as a job's end with its process."""
    yield
    while devices._held:
        os.close(devices._held.pop())


def test_visible_gpus_from_the_driver_or_the_users_restriction(tmp_path):
    driver = tmp_path / "gpus"
    driver.mkdir()
    for bus in ("0000:07:00.0", "0000:0b:00.0", "0000:48:00.0"):
        (driver / bus).mkdir()
    assert visible_gpus({}, driver) == ["0", "1", "2"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}, driver) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, driver) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, driver) == ["1"]
    assert visible_gpus({}, tmp_path / "no-driver") == []


def test_concurrent_jobs_get_distinct_gpus(tmp_path):
    env1, env2, env3 = {}, {}, {}
    pool = ["0", "1", "2", "3"]
    assert claim_gpus(1, pool=pool, lock_dir=tmp_path, environ=env1) == ["0"]
    assert claim_gpus(2, pool=pool, lock_dir=tmp_path, environ=env2) == ["1", "2"]
    assert claim_gpus(1, pool=pool, lock_dir=tmp_path, environ=env3) == ["3"]
    assert (env1["CUDA_VISIBLE_DEVICES"], env2["CUDA_VISIBLE_DEVICES"], env3["CUDA_VISIBLE_DEVICES"]) == ("0", "1,2", "3")
    # the first job ends: its GPU is free again for the next one
    os.close(devices._held.pop(0))
    assert claim_gpus(1, pool=pool, lock_dir=tmp_path, environ={}) == ["0"]


def test_a_users_restriction_is_kept(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "GPU-aaaa,GPU-bbbb"}
    assert claim_gpus(1, lock_dir=tmp_path, environ=env) == ["GPU-aaaa"]
    other = {"CUDA_VISIBLE_DEVICES": "GPU-aaaa,GPU-bbbb"}
    assert claim_gpus(1, lock_dir=tmp_path, environ=other) == ["GPU-bbbb"]
    assert other["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb"


def test_nothing_changes_under_slurm_without_gpus_or_without_a_gpu_request(tmp_path):
    slurm = {"SLURM_JOB_ID": "12", "CUDA_VISIBLE_DEVICES": "1"}
    assert claim_gpus(1, pool=["0", "1"], lock_dir=tmp_path, environ=slurm) is None
    assert slurm["CUDA_VISIBLE_DEVICES"] == "1"
    env = {}
    assert claim_gpus(1, pool=[], lock_dir=tmp_path, environ=env) is None
    assert claim_gpus(0, pool=["0"], lock_dir=tmp_path, environ=env) is None
    assert env == {} and not devices._held


def test_more_gpus_asked_than_free_shares_with_a_warning(tmp_path, caplog):
    pool = ["0", "1"]
    assert claim_gpus(1, pool=pool, lock_dir=tmp_path, environ={}) == ["0"]
    with caplog.at_level(logging.WARNING, logger="physdiff"):
        assert claim_gpus(2, pool=pool, lock_dir=tmp_path, environ={}) == ["1", "0"]
    assert "sharing 0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="physdiff"):
        assert claim_gpus(3, pool=pool, lock_dir=tmp_path, environ={}) == ["0", "1"]
    assert "only 2 visible" in caplog.text


JOB = textwrap.dedent("""
    import os, sys, time
    from types import SimpleNamespace
    from physdiff.workflow import use_own_gpus
    # what Snakemake's script object offers a job: its declared resources
    use_own_gpus(SimpleNamespace(resources=SimpleNamespace(gpu=int(sys.argv[1]))))
    print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    time.sleep(float(sys.argv[2]))
""")


def test_concurrent_job_processes_get_distinct_gpus(tmp_path):
    """Jobs as Snakemake's local executor starts them with --resources gpu=4 on a 4-GPU machine:
    two of one GPU and one of two at once; one is killed, and the next job gets its GPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1,2,3", "PHYSDIFF_GPU_LOCK_DIR": str(tmp_path)}
    env.pop("SLURM_JOB_ID", None)

    def start(gpus, hold):
        return subprocess.Popen([sys.executable, "-c", JOB, str(gpus), str(hold)], env=env,
                                stdout=subprocess.PIPE, text=True)

    running = []
    try:
        for gpus in (1, 1, 2):
            running.append(start(gpus, 60))
            running[-1].seen = running[-1].stdout.readline().strip()
        together = [p.seen for p in running]
        assert sorted(",".join(together).split(",")) == ["0", "1", "2", "3"], together
        running[1].kill()  # a job killed (scancel, Ctrl-C): its GPU is free at once
        running[1].wait()
        late = start(1, 0)
        assert late.stdout.readline().strip() == running[1].seen
        assert late.wait(timeout=60) == 0
    finally:
        for p in running:
            p.kill()
            p.wait()


def test_use_own_gpus_reads_the_rules_gpu_resource(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("PHYSDIFF_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert use_own_gpus(SimpleNamespace(resources=SimpleNamespace(mem_mb=1000))) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert use_own_gpus(SimpleNamespace(resources=SimpleNamespace(gpu=1))) == ["0"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
