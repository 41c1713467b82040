"""examples/: the library used on one's own data, without the pipeline, on tiny inputs made here."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from physdiff.data.crystals import get_crystal
from physdiff.data.nifti import write_volume
from physdiff.data.phantoms import blob_volume
from physdiff.data.stem_sim import save_sample, simulate_crystal
from physdiff.data.transforms import PowerTransform
from physdiff.models.train import save_model, train_prior

ROOT = Path(__file__).resolve().parents[1]
TINY_UNET = {"dim": 8, "dim_mults": [1, 2], "attn_resolutions": [], "temporal_attn_resolutions": [], "head_dim": 8}


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_models(folder: Path, slices: int, size: int, n: int = 2) -> list[str]:
    """n untrained-but-valid partition model files (one training step) for slabs of slices / n."""
    data = np.random.default_rng(0).random((4, slices // n, size, size), np.float32)
    paths = []
    for g in range(n):
        path = folder / f"g{g}" / "model.pt"
        save_model(path, train_prior(data, model_cfg={**TINY_UNET, "image_size": size}, steps=1, batch_size=2,
                                     grad_accum=1, progress=False))
        paths.append(str(path))
    return paths


def tiny_config(folder: Path, **mri) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["mri"].update(mri)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def mri_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mri_example")
    volume = np.zeros((24, 24, 8), np.float32)  # (x, y, z): a blob phantom with a background margin
    volume[4:20, 4:20] = np.moveaxis(blob_volume(8, 16, seed=1), 0, -1)
    nifti = write_volume(tmp / "scan.nii.gz", volume)
    return tmp, nifti, tiny_config(tmp, n_slices=4, size=[16, 16]), tiny_models(tmp, 4, 16)


def test_mri_example_reconstructs_a_nifti_and_the_same_kspace_alike(mri_case, capsys):
    tmp, nifti, config, models = mri_case
    run = example("reconstruct_mri").main
    common = ["--config", str(config), "--results", str(tmp / "no_run"), "--models", *models, "--steps", "3"]
    run(["--nifti", str(nifti), "--out", str(tmp / "a.npz"), *common])
    printed = capsys.readouterr().out
    with np.load(tmp / "a.npz") as a:
        recon = {k: a[k] for k in a.files}
    assert set(recon) == {"zero_filled", "cs_l1_wavelet", "tv", "dart"}
    assert all(v.shape == (4, 16, 16) and np.isfinite(v).all() for v in recon.values())
    ssim = {line.split(":")[0]: float(line.split()[-1]) for line in printed.splitlines() if "SSIM" in line}
    assert set(ssim) == set(recon) and all(-1 <= s <= 1 for s in ssim.values())

    # the measured-k-space path, fed the k-space the first run measured: the same reconstructions
    from physdiff.config import center_fraction, load_config
    from physdiff.data.masks import make_mask
    from physdiff.data.mri_prep import preprocess_volume
    from physdiff.data.nifti import load_volume
    from physdiff.physics.mri import simulate_kspace

    cfg = load_config(config)
    truth = preprocess_volume(load_volume(nifti), n_slices=4, size=[16, 16], margin=cfg["mri"]["crop_margin"])
    mask = make_mask("gaussian", shape=(16, 16), acceleration=4, center_fraction=center_fraction(cfg, 4),
                     seed=cfg["seed"])
    np.save(tmp / "y.npy", simulate_kspace(truth, mask, noise_std=cfg["recon"]["mri"]["noise_std"], seed=cfg["seed"]))
    np.save(tmp / "mask.npy", mask)
    run(["--kspace", str(tmp / "y.npy"), "--mask-file", str(tmp / "mask.npy"), "--out", str(tmp / "b.npz"), *common])
    assert "SSIM" not in capsys.readouterr().out  # no ground truth, nothing scored
    with np.load(tmp / "b.npz") as b:
        for key in recon:
            np.testing.assert_allclose(b[key], recon[key], atol=1e-5, err_msg=key)


def test_mri_example_stops_with_a_message_on_bad_input(mri_case, tmp_path, capsys):
    _, nifti, config, models = mri_case
    script = str(ROOT / "examples" / "reconstruct_mri.py")

    def run(*args):
        return subprocess.run([sys.executable, script, "--config", str(config), *args], capture_output=True,
                              text=True, timeout=300)

    out = run("--kspace", str(tmp_path / "y.npy"))
    assert out.returncode == 1 and "--kspace needs --mask-file" in out.stderr
    missing = tmp_path / "none" / "model.pt"
    out = run("--nifti", str(nifti), "--models", str(missing), str(missing), "--out", str(tmp_path / "x.npz"))
    assert out.returncode == 1 and str(missing) in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.npz").exists()


def test_stem_example_runs_every_method_on_a_sample(tmp_path, capsys):
    sample = simulate_crystal(get_crystal("Tb3InC"), zone_axis="001", min_extent=(4, 4), min_thickness=4,
                              gpts=48, n_slices=2, energy=200e3, semiangle=20.0, scan_gpts=(8, 8), seed=3)
    save_sample(tmp_path / "s.npz", sample)
    scale = float(sample["potential"].max())
    (tmp_path / "scale.json").write_text(json.dumps(PowerTransform(scale, 0.5).to_dict()))
    pool = np.random.default_rng(0).random((3, 2, 48, 48), np.float32) * 0.3
    np.save(tmp_path / "pool.npy", pool)
    models = tiny_models(tmp_path, 2, 48)
    example("reconstruct_stem").main([
        "--sample", str(tmp_path / "s.npz"), "--config", str(ROOT / "config" / "config.yaml"),
        "--results", str(tmp_path / "no_run"), "--models", *models, "--transform", str(tmp_path / "scale.json"),
        "--pool", str(tmp_path / "pool.npy"), "--k", "2", "--m", "2", "--steps", "3", "--out", str(tmp_path / "r.npz")])
    printed = capsys.readouterr().out
    with np.load(tmp_path / "r.npz") as r:
        recon = {k: r[k] for k in r.files}
    assert set(recon) == {"sparse_decomposition", "drift", "drift_twin", "dart"}
    assert all(v.shape == (2, 48, 48) and np.isfinite(v).all() for v in recon.values())
    assert printed.count("phase-projection SSIM") == 4
    assert not np.allclose(recon["drift"], recon["drift_twin"])  # DRIFT started from a candidate, not V = 0
