"""The Snakemake workflow itself: the tiny .test config end to end, and clean config errors."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import SNAKEMAKE
from conftest import write_test_config as _workdir


@pytest.mark.slow
def test_test_config_runs_every_rule_end_to_end(test_config_run):
    work, run = test_config_run  # the session's one run of the .test config (conftest.py)
    assert run.returncode == 0, run.stderr[-4000:]
    cfg = yaml.safe_load((work / "config" / "config.yaml").read_text())
    s, (h, w) = cfg["mri"]["n_slices"], cfg["mri"]["size"]

    subjects = json.loads((work / "results/data/mri/brats/subjects.json").read_text())
    assert sum(len(subjects[k]) for k in ("train", "val", "test")) == cfg["mri"]["n_subjects"]
    contrasts = cfg["mri"]["train_contrasts"]
    assert subjects["train_contrasts"] == contrasts and len(contrasts) > 1  # the .test config trains on several
    for split in ("train", "val", "test"):
        array = np.load(work / f"results/data/mri/brats/{split}.npy")
        n = len(subjects[split]) * (len(contrasts) if split == "train" else 1)
        assert array.shape == (n, s, h, w)
        assert array.min() >= 0 and array.max() <= 1
    raw = work / "results/data/mri/raw/synthetic"
    for contrast in contrasts:
        assert len(list(raw.glob(f"*/BraTS20_Training_*/BraTS20_Training_*_{contrast}.nii.gz"))) == cfg["mri"]["n_subjects"]
    from physdiff.models.train import load_model, model_classes  # the MRI models are contrast-conditional
    model, _ = load_model(work / "results/prior/mri/G2/g0/model.pt")
    assert model_classes(model) == tuple(contrasts) and model.label == 0  # drawing FLAIR by default
    assert model_classes(load_model(work / "results/prior/stem/G2/g0/model.pt")[0]) == ()
    assert np.load(work / "results/data/mri/roots/ood.npy").shape == (cfg["mri"]["ood"]["n_volumes"], s, h, w)
    for kind in cfg["mri"]["masks"]["kinds"]:
        assert np.load(work / f"results/data/mri/masks/{kind}_R4.npy").shape == (h, w)

    stem = sorted((work / "results/data/stem").glob("*/*.npz"))
    assert {p.parent.name for p in stem} >= {"train", "test", "ood"}
    with np.load(stem[0]) as sample:
        assert sample["potential"].shape[0] == cfg["stem"]["simulation"]["n_slices"]
    assert (work / "results/figures/datasets.png").stat().st_size > 10_000
    # one MRI baseline job writes every volume of its dataset: each file holds its own volume's row
    rows = sorted((work / "results/recon/mri").glob("*/*/*/*.json"))
    baseline = [p for p in rows if p.parent.name in ("zero_filled", "cs_l1_wavelet", "tv", "projection")]
    assert {p.parts[-4] for p in baseline} == {"brats", "roots"}
    for path in baseline:
        row = json.loads(path.read_text())
        assert (row["dataset"], row["mask"], row["sample"]) == (path.parts[-4], path.parts[-3], path.stem)
    zero_filled = sorted((work / "results/recon/mri/brats").glob("*/zero_filled/*.npy"))
    assert len(zero_filled) >= 2 and not np.array_equal(np.load(zero_filled[0]), np.load(zero_filled[1]))
    # DRIFT (4D-STEM): tune_drift chose M among the counts it refined; each test job logs every
    # candidate, and the chosen one is among the M best-scored, with its data loss
    tuning = json.loads((work / "results/recon/stem/tuning/full/drift.json").read_text())
    assert 1 <= tuning["refine_top"] <= cfg["recon"]["drift"]["refine_top"]["stem"]
    table = pd.read_csv(next((work / "results/recon/stem/test/drift").glob("*_scores.csv")))
    assert len(table) == cfg["recon"]["drift"]["n_candidates"]["stem"]
    chosen = table[table.chosen]
    assert len(chosen) == 1 and chosen["rank"].iloc[0] < tuning["refine_top"] and np.isfinite(chosen["loss"].iloc[0])
    # every rule leaves a log behind
    assert any((work / "results" / "logs").rglob("*.log"))


def test_bad_config_stops_before_any_job_naming_the_key(tmp_path):
    work = _workdir(tmp_path, {"mri": {"n_slices": 0}})
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(work), "--cores", "1", "-n"], capture_output=True, text=True, timeout=300,
    )
    assert run.returncode != 0
    assert "config key 'mri.n_slices'" in run.stderr + run.stdout
    assert not (work / "results").exists()


def test_missing_brats_folder_is_reported(tmp_path):
    work = _workdir(tmp_path, {"mri": {"source": "brats", "path": str(tmp_path / "no_such_folder")}})
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(work), "--cores", "1", "-n"], capture_output=True, text=True, timeout=300,
    )
    assert run.returncode != 0
    assert "no_such_folder" in run.stderr + run.stdout


@pytest.mark.slow
def test_corrupt_nifti_fails_the_job_naming_the_file_and_leaves_nothing(tmp_path):
    from physdiff.data.nifti import write_volume

    data = tmp_path / "my_volumes"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        write_volume(data / f"subject{i}.nii.gz", rng.random((48, 48, 24)).astype(np.float32))
    (data / "subject9.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    work = _workdir(tmp_path / "work", {"mri": {"source": "nifti", "path": str(data), "train_contrasts": ["flair"]}})
    target = "results/data/mri/brats/train.npy"
    run = subprocess.run(
        [*SNAKEMAKE, "--directory", str(work), "--cores", "1", target], capture_output=True, text=True, timeout=600,
    )
    assert run.returncode != 0
    log = (work / "results/logs/data/prepare_mri.log").read_text()
    assert "subject9.nii.gz" in log and "cannot read as a NIfTI volume" in log
    assert "Traceback" not in log
    assert not list((work / "results/data/mri").rglob("*.npy")), "a failed job must leave no partial output"
