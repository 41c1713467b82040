"""The `physdiff` command on tiny inputs made here: mri, stem (measured data, no ground truth), info, bad files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from physdiff.cli import main
from physdiff.data.crystals import get_crystal
from physdiff.data.phantoms import blob_volume
from physdiff.data.stem_sim import simulate_crystal
from physdiff.data.transforms import PowerTransform
from physdiff.models.train import save_model, train_prior
from physdiff.results import Layout

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
TINY_UNET = {"dim": 8, "dim_mults": [1, 2], "attn_resolutions": [], "temporal_attn_resolutions": [], "head_dim": 8}
DART = {"sampler": "ddim", "steps": 2, "eta": 0.0, "correction": "x0", "n_samples": 1, "seam": "none",
        "start": 1.0, "mean_snr": 0.0}
# the scan's voxel -> world map: anisotropic voxels, a rotation about z and an offset, so a wrong affine shows
AFFINE = np.array([[0.0, -1.1, 0.0, 30.0], [0.9, 0.0, 0.0, -12.0], [0.0, 0.0, 2.0, 5.0], [0.0, 0.0, 0.0, 1.0]])


def tiny_models(lay: Layout, modality: str, slices: int, size: int, G: int = 2) -> None:
    """G untrained-but-valid partition models (one training step) where the run keeps them."""
    data = np.random.default_rng(0).random((4, slices // G, size, size), np.float32)
    for path in lay.prior_models(modality, G):
        save_model(path, train_prior(data, model_cfg={**TINY_UNET, "image_size": size}, steps=1, batch_size=2,
                                     grad_accum=1, progress=False))


def write_config(path: Path, **sections) -> Path:
    """The default config with some keys of its sections replaced (one level deep)."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for section, values in sections.items():
        for key, value in values.items():
            cfg[section][key] = {**cfg[section][key], **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def mri_run(tmp_path_factory):
    """(folder, scan, config, results) for a 24 x 24 x 8 blob scan and a run with tiny MRI models."""
    tmp = tmp_path_factory.mktemp("cli_mri")
    volume = np.zeros((24, 24, 8), np.float32)  # (x, y, z): a blob phantom with a background margin
    volume[4:20, 4:20] = np.moveaxis(blob_volume(8, 16, seed=1), 0, -1)
    nib.save(nib.Nifti1Image(volume, AFFINE), str(tmp / "scan.nii.gz"))
    config = write_config(tmp / "config.yaml", mri={"n_slices": 4, "size": [16, 16]},
                          recon={"dart": {"steps": 2}, "mri": {"max_iter": {"tv": 10, "cs_l1_wavelet": 10}}})
    lay = Layout(tmp / "results")
    tiny_models(lay, "mri", 4, 16)
    return tmp, tmp / "scan.nii.gz", config, lay


def test_help_reads_like_a_manual_at_every_level(capsys):
    for argv in ([], ["mri"], ["stem"], ["info"]):
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--help"])
        assert stop.value.code == 0
        text = capsys.readouterr().out
        assert "example" in text and "usage: physdiff" in text
    with pytest.raises(SystemExit):
        main(["mri", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: gaussian)" in text and "affine" in text and "--grid" in text


def test_mri_baseline_on_the_native_grid_keeps_the_scans_affine_shifted_to_the_slab(mri_run, tmp_path, capsys):
    _, scan, config, _ = mri_run
    out = tmp_path / "tv.nii.gz"
    assert run("mri", scan, "--out", out, "--method", "tv", "--grid", "native", "--slab", "3", "--config", config,
               "--results", tmp_path / "no_run") == 0
    printed = capsys.readouterr().out
    assert "no tuning file" in printed and "slices 3-6 of 8" in printed and "SSIM" in printed
    image = nib.load(str(out))
    shift = np.eye(4)
    shift[2, 3] = 3  # the output's slice 0 is the scan's slice 3
    np.testing.assert_allclose(image.affine, AFFINE @ shift, atol=1e-5)
    assert image.shape == (24, 24, 4) and np.isfinite(image.get_fdata()).all()
    assert (tmp_path / "tv.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tv.nii.gz", "tv.png"]  # no temporary left behind


def test_mri_prior_grid_affine_puts_the_reconstruction_where_the_scan_has_it(mri_run, tmp_path):
    _, scan, config, _ = mri_run
    out, lay = tmp_path / "zf.nii.gz", Layout(tmp_path / "full")
    lay.mri_mask("gaussian_R4").parent.mkdir(parents=True)
    np.save(lay.mri_mask("gaussian_R4"), np.ones((16, 16), bool))  # every line: zero-filled is the prepared slab
    assert run("mri", scan, "--out", out, "--method", "zero_filled", "--config", config, "--results", lay.root) == 0
    # the prepared slab's centre of mass in world coordinates must be the scan's own over the same slices
    image, source = nib.load(str(out)), nib.load(str(scan))
    assert image.shape == (16, 16, 4)

    def world_centroid(data, affine, first_slice=0):
        index = np.stack(np.meshgrid(*(np.arange(n) for n in data.shape), indexing="ij"), -1).reshape(-1, 3)
        centre = (index * data.reshape(-1, 1)).sum(0) / data.sum() + [0, 0, first_slice]
        return (affine @ np.r_[centre, 1])[:3]

    first = int(round(np.linalg.solve(source.affine, image.affine @ [0, 0, 0, 1])[2]))
    slab = source.get_fdata()[:, :, first:first + 4]
    np.testing.assert_allclose(world_centroid(image.get_fdata(), image.affine),
                               world_centroid(slab, source.affine, first), atol=1.2)  # mm; voxels are 0.9-2 mm


def test_mri_dart_reads_the_runs_models_mask_and_tuning_and_its_kspace_path_agrees(mri_run, tmp_path, capsys):
    tmp, scan, config, lay = mri_run
    from physdiff.config import load_config
    from physdiff.data.masks import make_mask
    from physdiff.data.mri_prep import preprocess_volume
    from physdiff.data.nifti import load_volume
    from physdiff.physics.mri import simulate_kspace

    cfg = load_config(config)
    mask = make_mask("gaussian", shape=(16, 16), acceleration=4, center_fraction=0.08, seed=5)
    lay.mri_mask("gaussian_R4").parent.mkdir(parents=True, exist_ok=True)
    np.save(lay.mri_mask("gaussian_R4"), mask)  # the run's own mask: the CLI must use it, not draw one
    lay.tuning("mri", "dart", mask="gaussian_R4").parent.mkdir(parents=True, exist_ok=True)
    lay.tuning("mri", "dart", mask="gaussian_R4").write_text(json.dumps({"settings": DART, "score": 0.5}))
    assert run("mri", scan, "--out", tmp_path / "a.nii.gz", "--config", config, "--results", lay.root) == 0
    printed = capsys.readouterr().out
    assert "the run's own" in printed and "DART's settings: tuned" in printed

    truth = preprocess_volume(load_volume(scan), n_slices=4, size=[16, 16], margin=cfg["mri"]["crop_margin"])
    np.save(tmp_path / "y.npy", simulate_kspace(truth, mask, noise_std=cfg["recon"]["mri"]["noise_std"],
                                                seed=cfg["seed"]))
    np.save(tmp_path / "gaussian_R4.npy", mask)  # named as the run's mask: the same tuned settings
    assert run("mri", "--kspace", tmp_path / "y.npy", "--mask-file", tmp_path / "gaussian_R4.npy",
               "--out", tmp_path / "b.nii.gz", "--config", config, "--results", lay.root) == 0
    assert "SSIM" not in capsys.readouterr().out  # no ground truth, nothing scored
    a, b = nib.load(str(tmp_path / "a.nii.gz")), nib.load(str(tmp_path / "b.nii.gz"))
    np.testing.assert_allclose(b.get_fdata(), a.get_fdata(), atol=1e-5)
    assert b.shape == (16, 16, 4) and np.isfinite(a.get_fdata()).all()


def test_mri_adapted_dart_falls_back_to_the_configs_settings_with_a_note(mri_run, tmp_path, capsys):
    _, scan, config, lay = mri_run
    assert run("mri", scan, "--out", tmp_path / "ad.nii", "--method", "dart_adapt", "--mask", "uniform",
               "--config", config, "--results", lay.root) == 0
    printed = capsys.readouterr().out
    assert "no tuning file" in printed and "recon.dart" in printed
    assert nib.load(str(tmp_path / "ad.nii")).shape == (16, 16, 4)


@pytest.fixture(scope="module")
def stem_data(tmp_path_factory):
    """A tiny simulated 4D-STEM measurement saved as a measured one: patterns .npy + metadata YAML, no potential."""
    tmp = tmp_path_factory.mktemp("cli_stem")
    sample = simulate_crystal(get_crystal("Tb3InC"), zone_axis="001", min_extent=(4, 4), min_thickness=4,
                              gpts=48, n_slices=2, energy=200e3, semiangle=20.0, scan_gpts=(8, 8), seed=3)
    np.save(tmp / "data.npy", sample["intensities"])
    pos = sample["positions"]
    meta = {"energy": 200000.0, "semiangle": 20.0, "defocus": 0.0,
            "scan_step": [float(pos[1, 0, 0]), float(pos[0, 1, 1])],
            "detector_pixel": [float(a) for a in sample["angular_sampling"]], "detector_unit": "mrad",
            "slice_thickness": float(sample["slice_thickness"][0]), "n_slices": 2}
    (tmp / "probe.yaml").write_text(yaml.safe_dump(meta))
    config = write_config(tmp / "config.yaml", stem={"simulation": {"gpts": 48, "n_slices": 2}},
                          recon={"stem": {"sparse_decomposition": {"n_iter": 1}}})
    return tmp, sample, meta, config


def test_stem_geometry_from_metadata_is_the_simulations(stem_data):
    from physdiff.data.stem_measured import STEMMetadata, geometry_from_metadata
    from physdiff.physics.multislice import MultisliceGeometry

    _, sample, meta, _ = stem_data
    simulated = MultisliceGeometry.from_sample(sample)
    measured = geometry_from_metadata(STEMMetadata(**meta), sample["intensities"].shape[:2], gpts=48)
    np.testing.assert_allclose(measured.sampling, simulated.sampling, rtol=1e-9)
    np.testing.assert_allclose(measured.positions, simulated.positions, atol=1e-6)  # Å; abTEM's are float32
    assert measured.detector_gpts == simulated.detector_gpts and measured.slice_thickness == simulated.slice_thickness
    assert (measured.sigma, measured.wavelength) == (simulated.sigma, simulated.wavelength)


def test_stem_baseline_on_measured_data_runs_the_tuned_solver(stem_data, tmp_path, capsys):
    from physdiff.config import load_config
    from physdiff.data.stem_measured import STEMMetadata, geometry_from_metadata
    from physdiff.recon.stem_baselines import sparse_decomposition

    tmp, sample, meta, config = stem_data
    lay = Layout(tmp_path / "run")
    lay.tuning("stem", "sparse_decomposition").parent.mkdir(parents=True)
    lay.tuning("stem", "sparse_decomposition").write_text(json.dumps({"param": "sparsity", "value": 1e-5, "n_iter": 2}))
    out = tmp_path / "v.npy"
    assert run("stem", tmp / "data.npy", "--metadata", tmp / "probe.yaml", "--normalize", "none", "--method",
               "sparse", "--out", out, "--config", config, "--results", lay.root) == 0
    assert "0.1031 Å" in capsys.readouterr().out  # 4.95 Å cell on 48 points, from the detector pixel alone
    geometry = geometry_from_metadata(STEMMetadata(**meta), sample["intensities"].shape[:2], gpts=48)
    expected, _ = sparse_decomposition(sample["intensities"], geometry, n_iter=2, sparsity=1e-5,
                                       form=load_config(config)["recon"]["stem"]["loss"], progress=False)
    np.testing.assert_allclose(np.load(out), expected.numpy(), rtol=1e-5, atol=1e-4)
    assert (tmp_path / "v.png").stat().st_size > 0


def test_stem_reads_a_stack_of_frames_as_a_scan_and_keeps_a_region(tmp_path):
    from physdiff.data.stem_files import read_measurement

    frames = np.arange(6 * 4 * 3 * 3, dtype=np.float32).reshape(24, 3, 3)  # 6 x 4 scan, row by row
    np.save(tmp_path / "frames.npy", frames)
    data, calibration = read_measurement(tmp_path / "frames.npy", scan_shape=(6, 4), region=(1, 4, 2, 4))
    np.testing.assert_array_equal(data, frames.reshape(6, 4, 3, 3)[1:4, 2:4])
    assert calibration == {} and data.flags.writeable


def test_stem_reads_an_emd_file_with_its_calibration(stem_data, tmp_path):
    emdfile = pytest.importorskip("emdfile")
    from physdiff.data.stem_files import read_measurement
    from physdiff.data.stem_measured import wavelength_sigma

    tmp, sample, meta, config = stem_data
    wavelength, _ = wavelength_sigma(meta["energy"])
    step, pixel = meta["scan_step"][0], meta["detector_pixel"][0] / (1e3 * wavelength)  # Å and 1/Å
    n = sample["intensities"].shape
    root = emdfile.Root(name="scan")
    root.add_to_tree(emdfile.Array(data=sample["intensities"], name="datacube", dims=[
        [0, step / 10], [0, step / 10], [0, pixel], [0, pixel]], dim_units=["nm", "nm", "A^-1", "A^-1"]))
    emdfile.save(str(tmp_path / "data.h5"), root, mode="o")
    data, calibration = read_measurement(tmp_path / "data.h5")
    np.testing.assert_array_equal(data, sample["intensities"])
    assert data.shape == n and calibration["detector_unit"] == "1/A"
    np.testing.assert_allclose(calibration["scan_step"], [step, step], rtol=1e-6)
    np.testing.assert_allclose(calibration["detector_pixel"], [pixel, pixel], rtol=1e-6)
    # the command takes the scan step and detector pixel from the file, the rest from options
    common = ["--normalize", "none", "--method", "sparse", "--config", config, "--results", tmp_path / "no_run"]
    assert run("stem", tmp_path / "data.h5", "--out", tmp_path / "emd.npy", "--energy", meta["energy"],
               "--semiangle", meta["semiangle"], "--slice-thickness", meta["slice_thickness"], "--n-slices", 2,
               *common) == 0
    assert run("stem", tmp / "data.npy", "--metadata", tmp / "probe.yaml", "--out", tmp_path / "npy.npy", *common) == 0
    np.testing.assert_allclose(np.load(tmp_path / "emd.npy"), np.load(tmp_path / "npy.npy"), rtol=1e-5, atol=1e-4)


def test_stem_reads_py4dstems_own_file_without_py4dstem():
    pytest.importorskip("emdfile")
    from physdiff.data.stem_files import read_measurement

    data, calibration = read_measurement(FIXTURES / "py4dstem_datacube.h5")
    assert data.shape == (3, 4, 10, 10) and data[2, 3, 4, 5] == 2345
    assert calibration == {"scan_step": [0.5, 0.5], "detector_pixel": [0.05, 0.05], "detector_unit": "1/A"}


def test_stem_reads_a_hyperspy_file_with_its_axes_and_beam(tmp_path):
    hspy = pytest.importorskip("rsciio.hspy")
    from physdiff.data.stem_files import read_measurement

    data = np.random.default_rng(0).random((3, 4, 6, 6)).astype(np.float32)
    axes = [dict(name=n, size=s, scale=sc, offset=0.0, units=u, navigate=nav) for n, s, sc, u, nav in
            (("y", 3, 0.05, "nm", True), ("x", 4, 0.05, "nm", True), ("ky", 6, 0.4, "1/nm", False),
             ("kx", 6, 0.4, "1/nm", False))]
    hspy.file_writer(str(tmp_path / "d.hspy"), {
        "data": data, "axes": axes, "metadata": {"General": {"title": "d"}, "Signal": {},
                                                 "Acquisition_instrument": {"TEM": {"beam_energy": 300.0,
                                                                                    "convergence_angle": 21.0}}},
        "original_metadata": {}, "attributes": {"_lazy": False}, "tmp_parameters": {},
        "package_info": {"name": "physdiff", "version": "test"}, "learning_results": {}, "models": {}},
        show_progressbar=False)
    read, calibration = read_measurement(tmp_path / "d.hspy")
    np.testing.assert_array_equal(read, data)
    assert calibration["energy"] == 300e3 and calibration["semiangle"] == 21.0
    np.testing.assert_allclose(calibration["scan_step"], [0.5, 0.5])
    np.testing.assert_allclose(calibration["detector_pixel"], [0.04, 0.04])
    assert calibration["detector_unit"] == "1/A"


@pytest.fixture(scope="module")
def stem_run(stem_data):
    """A results folder with tiny 4D-STEM models, the potential scaling, a pool and tuned DART/DRIFT."""
    tmp, sample, _, _ = stem_data
    lay = Layout(tmp / "results")
    tiny_models(lay, "stem", 2, 48)
    lay.stem_scale().write_text(json.dumps(PowerTransform(float(sample["potential"].max()), 0.5).to_dict()))
    lay.candidates("stem").parent.mkdir(parents=True)
    np.save(lay.candidates("stem"), np.random.default_rng(0).random((3, 2, 48, 48), np.float32) * 0.3)
    for method, tuning in (("dart", {"settings": DART, "score": 0.4}), ("drift", {"n_iter": 1, "refine_top": 2})):
        lay.tuning("stem", method).parent.mkdir(parents=True, exist_ok=True)
        lay.tuning("stem", method).write_text(json.dumps(tuning))
    return lay


@pytest.mark.parametrize("method", ["dart", "drift"])
def test_stem_prior_methods_read_the_run(stem_data, stem_run, method, tmp_path, capsys):
    tmp, _, _, config = stem_data
    out = tmp_path / f"{method}.npy"
    assert run("stem", tmp / "data.npy", "--metadata", tmp / "probe.yaml", "--normalize", "none",
               "--method", method, "--out", out, "--config", config, "--results", stem_run.root) == 0
    printed = capsys.readouterr().out
    assert ("DART's settings: tuned" if method == "dart" else "DRIFT's K and M: tuned") in printed
    potential = np.load(out)
    assert potential.shape == (2, 48, 48) and np.isfinite(potential).all() and potential.max() > 0


def test_info_says_what_a_run_holds(stem_run, mri_run, capsys):
    lay = stem_run
    lay.tuning("mri", "cs_l1_wavelet", mask="gaussian_R4").parent.mkdir(parents=True, exist_ok=True)
    lay.tuning("mri", "cs_l1_wavelet", mask="gaussian_R4").write_text(json.dumps(
        {"param": "lam", "value": 0.001, "table": [{"lam": 0.001, "ssim_mean": 0.88}]}))
    lay.table("table1").parent.mkdir(parents=True, exist_ok=True)
    lay.table("table1").write_text("| method | SSIM |\n|---|---|\n| DART | 0.961 |\n")
    lay.figure("datasets").parent.mkdir(parents=True, exist_ok=True)
    lay.figure("datasets").write_bytes(b"\x89PNG")
    assert run("info", lay.root) == 0
    printed = capsys.readouterr().out
    assert "stem G=2 g1: 1 steps, slabs 1 x 48 x 48" in printed
    assert "stem full dart: sampler ddim, steps 2" in printed and "stem full drift: K = 1, M = 2" in printed
    assert "mri gaussian_R4 cs_l1_wavelet: lam = 0.001; validation SSIM 0.8800" in printed
    assert "| DART | 0.961 |" in printed and "figures: datasets.png" in printed


class Pickled:
    """Not a tensor: torch.load(weights_only=True) refuses a file holding one."""


def bad_inputs(tmp: Path, mri_run, stem_data) -> dict:
    """{case: (argv, the file the message must name)}."""
    _, scan, config, _ = mri_run
    stem_tmp, _, meta, stem_config = stem_data
    (tmp / "bad.nii.gz").write_bytes(b"not a nifti file at all")
    nan = np.full((24, 24, 8), np.nan, np.float32)
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(tmp / "nan.nii.gz"))
    np.save(tmp / "flat.npy", np.ones((6, 6), np.float32))
    bad = np.load(stem_tmp / "data.npy")
    bad[0, 0, 0, 0] = np.nan
    np.save(tmp / "nan.npy", bad)
    (tmp / "key.yaml").write_text(yaml.safe_dump({**meta, "voltage": 200}))
    (tmp / "syntax.yaml").write_text("energy: [200000\n")
    run_dir = Layout(tmp / "run")
    for path in run_dir.prior_models("mri", 2):
        path.parent.mkdir(parents=True)
        torch.save({"ema": Pickled(), "config": {"model": {}}}, path)
    corrupt = Layout(tmp / "corrupt").prior_model("stem", 2, 0)
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    mri = ["--out", tmp / "out.nii.gz", "--config", config]
    stem = ["--out", tmp / "out.npy", "--config", stem_config, "--method", "sparse"]
    meta_args = ["--metadata", stem_tmp / "probe.yaml"]
    return {
        "missing NIfTI": (["mri", tmp / "none.nii.gz", *mri], tmp / "none.nii.gz"),
        "corrupt NIfTI": (["mri", tmp / "bad.nii.gz", *mri], tmp / "bad.nii.gz"),
        "NaN NIfTI": (["mri", tmp / "nan.nii.gz", *mri, "--method", "cs"], tmp / "nan.nii.gz"),
        "untrusted checkpoint": (["mri", scan, *mri, "--results", run_dir.root], run_dir.prior_model("mri", 2, 0)),
        "wrong-shape npy": (["stem", tmp / "flat.npy", *meta_args, *stem], tmp / "flat.npy"),
        "NaN npy": (["stem", tmp / "nan.npy", *meta_args, *stem], tmp / "nan.npy"),
        "unknown YAML key": (["stem", stem_tmp / "data.npy", "--metadata", tmp / "key.yaml", *stem], tmp / "key.yaml"),
        "YAML syntax": (["stem", stem_tmp / "data.npy", "--metadata", tmp / "syntax.yaml", *stem],
                        tmp / "syntax.yaml"),
        "missing 4D-STEM data": (["stem", tmp / "none.npy", *meta_args, *stem], tmp / "none.npy"),
        "missing results folder": (["info", tmp / "no_run"], tmp / "no_run"),
        "corrupt checkpoint": (["info", tmp / "corrupt"], corrupt),
    }


def test_every_bad_file_stops_with_its_name_and_leaves_nothing(mri_run, stem_data, tmp_path, capsys):
    for case, (argv, named) in bad_inputs(tmp_path, mri_run, stem_data).items():
        assert run(*argv) == 1, case
        err = capsys.readouterr().err
        assert str(named) in err and "Traceback" not in err, (case, err)
        assert len(err.strip().splitlines()) == 1, (case, err)
        left = [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]
        assert not left, (case, left)


def test_installed_command_exits_1_without_a_traceback(tmp_path):
    command = shutil.which("physdiff", path=str(Path(sys.executable).parent)) or shutil.which("physdiff")
    if command is None:
        pytest.skip("the physdiff entry point is not installed (pip install -e .)")
    missing = tmp_path / "scan.nii.gz"
    done = subprocess.run([command, "mri", str(missing), "--out", str(tmp_path / "r.nii.gz"), "--method", "tv"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1 and str(missing) in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.nii.gz").exists()
