"""MRI data layer: NIfTI I/O, synthetic FLAIR, plant-root volumes, preprocessing and splits."""

import gzip
import sys

import nibabel as nib
import numpy as np
import pytest

from physdiff.data import flair, mri_prep, nifti, roots
from physdiff.errors import ConfigError, InputError, MissingExtraError

SMALL = (60, 60, 39)  # the BraTS field of view at 4 mm voxels


def _write_reference(path, data):
    """Write with nibabel directly, so loader tests do not rely on our own writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), str(path))
    return path


@pytest.fixture
def brats_root(tmp_path):
    rng = np.random.default_rng(0)
    data_dir = tmp_path / "MICCAI_BraTS2020_TrainingData"
    for number, suffix in [(10, ".nii.gz"), (2, ".nii"), (1, ".nii.gz")]:
        name = f"BraTS20_Training_{number:03d}"
        _write_reference(data_dir / name / f"{name}_flair{suffix}", rng.random((8, 9, 5)).astype(np.float32))
        _write_reference(data_dir / name / f"{name}_t1{suffix}", np.zeros((8, 9, 5), np.float32))
    return tmp_path


# --- NIfTI ---------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_load_volume_round_trips_nibabel_file(tmp_path, suffix):
    data = np.random.default_rng(1).random((7, 6, 5)).astype(np.float32)
    path = _write_reference(tmp_path / f"vol{suffix}", data)
    out = nifti.load_volume(path, expected_shape=(7, 6, 5))
    assert out.dtype == np.float32 and np.array_equal(out, data)


def test_find_brats_subjects_sorted_by_number_from_either_root(brats_root):
    for root in (brats_root, brats_root / "MICCAI_BraTS2020_TrainingData"):
        paths = nifti.find_brats_subjects(root)
        assert [p.parent.name for p in paths] == [f"BraTS20_Training_{n:03d}" for n in (1, 2, 10)]
        assert all("_flair.nii" in p.name for p in paths)
    assert [nifti.volume_id(p) for p in paths] == ["BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_010"]


def test_find_brats_subjects_none_found_names_pattern(tmp_path):
    with pytest.raises(InputError, match="BraTS20_Training_NNN_flair"):
        nifti.find_brats_subjects(tmp_path)


def test_find_nifti_volumes_sorted_and_errors(tmp_path):
    for name in ["b.nii.gz", "a.nii", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in nifti.find_nifti_volumes(tmp_path)] == ["a.nii", "b.nii.gz"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no NIfTI"):
        nifti.find_nifti_volumes(tmp_path / "empty")


def test_write_volume_sets_spacing_and_round_trips(tmp_path):
    data = np.random.default_rng(2).random((6, 5, 4)).astype(np.float32)
    path = nifti.write_volume(tmp_path / "sub" / "v.nii.gz", data, spacing=(2.0, 2.0, 3.0))
    image = nib.load(str(path))
    assert image.header.get_zooms() == (2.0, 2.0, 3.0)
    assert np.allclose(np.diag(image.affine)[:3], (2.0, 2.0, 3.0))
    assert np.array_equal(nifti.load_volume(path), data)
    assert sorted(p.name for p in path.parent.iterdir()) == ["v.nii.gz"]  # no temporary left behind


def _corrupt_files(tmp_path):
    good = gzip.compress(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)).to_bytes())
    (tmp_path / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.nii").write_bytes(b"this is not a nifti file" * 20)
    return [tmp_path / "truncated.nii.gz", tmp_path / "garbage.nii"]


def test_load_volume_rejects_bad_files(tmp_path):
    with pytest.raises(InputError, match="missing.nii.gz: file not found"):
        nifti.load_volume(tmp_path / "missing.nii.gz")
    for path in _corrupt_files(tmp_path):
        with pytest.raises(InputError, match=path.name):
            nifti.load_volume(path)
    nan = np.ones((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        nifti.load_volume(_write_reference(tmp_path / "nan.nii", nan))
    with pytest.raises(InputError, match="3D"):
        nifti.load_volume(_write_reference(tmp_path / "four.nii", np.ones((4, 4, 4, 2), np.float32)))
    with pytest.raises(InputError, match="3D"):
        nifti.load_volume(_write_reference(tmp_path / "two.nii", np.ones((4, 4), np.float32)))
    with pytest.raises(InputError, match=r"expected shape \(240, 240, 155\)"):
        nifti.load_volume(_write_reference(tmp_path / "small.nii", np.ones((4, 4, 4), np.float32)), expected_shape=(240, 240, 155))


# --- synthetic FLAIR -----------------------------------------------------------------------

def test_flair_is_deterministic_and_varies_with_seed():
    a = flair.synth_flair_volume(11, shape=SMALL)
    b = flair.synth_flair_volume(11, shape=SMALL)
    c = flair.synth_flair_volume(12, shape=SMALL)
    assert a.shape == SMALL and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 0.05 * a.mean()


def test_flair_contrast_ordering_csf_wm_gm_lesion():
    # FLAIR: fluid nulled (CSF dark), grey matter above white matter, lesions brightest.
    shape = (120, 120, 78)
    subject = next(
        s for s in (flair.synth_flair_subject(seed, shape=shape, with_labels=True) for seed in range(20))
        if (s.labels == flair.CORE).sum() > 20
    )
    v, lab = subject.volume, subject.labels
    mean = {k: v[lab == k].mean() for k in (flair.CSF, flair.GM, flair.WM, flair.EDEMA, flair.CORE)}
    assert mean[flair.CSF] < 0.5 * mean[flair.WM]
    assert mean[flair.WM] < mean[flair.GM]
    assert mean[flair.GM] < mean[flair.EDEMA] < mean[flair.CORE]
    # Background holds Rician noise only: small next to tissue, but not exactly zero.
    corner = v[:10, :10, :10]
    assert 0 < corner.mean() < 0.1 * mean[flair.WM]


def test_t1_and_t2_draw_the_same_subject_in_their_own_contrast():
    # The other contrasts share FLAIR's anatomy and lesions, with T1 and T2 tissue order; asking
    # for them leaves the FLAIR volume of the seed as it was.
    shape = (120, 120, 78)
    seed = next(seed for seed in range(20)
                if (flair.synth_flair_subject(seed, shape=shape, with_labels=True).labels == flair.CORE).sum() > 20)
    alone = flair.synth_flair_subject(seed, shape=shape)
    subject = flair.synth_flair_subject(seed, shape=shape, with_labels=True, contrasts=("flair", "t1", "t2"))
    assert np.array_equal(subject.volume, alone.volume) and set(subject.others) == {"t1", "t2"}
    t2_alone = flair.synth_flair_subject(seed, shape=shape, contrasts=("flair", "t2")).others["t2"]
    assert np.array_equal(subject.others["t2"], t2_alone)  # each contrast's draws are its own
    lab = subject.labels
    t1 = {k: subject.others["t1"][lab == k].mean() for k in (flair.CSF, flair.GM, flair.WM, flair.CORE)}
    t2 = {k: subject.others["t2"][lab == k].mean() for k in (flair.CSF, flair.GM, flair.WM, flair.CORE)}
    assert t1[flair.CSF] < t1[flair.GM] < t1[flair.WM] and t1[flair.CORE] < t1[flair.WM]  # T1: lesions dark
    assert t2[flair.WM] < t2[flair.GM] < t2[flair.CSF] and t2[flair.CORE] > t2[flair.GM]  # T2: fluid bright
    brain = [(v > 0.2 * v[lab == flair.WM].mean()) for v in (subject.volume, *subject.others.values())]
    assert all((b == brain[0]).mean() > 0.97 for b in brain[1:])  # one head, one position
    with pytest.raises(ValueError, match="unknown contrasts"):
        flair.synth_flair_subject(seed, shape=SMALL, contrasts=("flair", "pd"))


def test_training_split_adds_the_other_contrasts_of_the_training_subjects(tmp_path):
    from physdiff.data.mri_dataset import build_mri_splits

    flair.write_synthetic_brats(tmp_path, n_subjects=4, seed=2, shape=SMALL, contrasts=("flair", "t1"))
    kwargs = dict(n_slices=4, size=(16, 16), margin=0.15, fractions={"train": 0.5, "val": 0.25, "test": 0.25},
                  seed=0, progress=False)
    plain = build_mri_splits("synthetic", tmp_path, **kwargs)
    both = build_mri_splits("synthetic", tmp_path, train_contrasts=("flair", "t1"), **kwargs)
    ids, train = both["train"]
    assert ids == plain["train"][0] and train.shape == (4, 4, 16, 16)
    assert np.array_equal(train[:2], plain["train"][1])  # FLAIR first, then the same subjects' T1
    t1 = np.stack([mri_prep.preprocess_volume(nifti.load_volume(
        tmp_path / nifti.BRATS_DATA_DIR / i / f"{i}_t1.nii.gz"), n_slices=4, size=(16, 16), margin=0.15) for i in ids])
    assert np.array_equal(train[2:], t1)
    for split in ("val", "test"):
        assert np.array_equal(both[split][1], plain[split][1])
    with pytest.raises(InputError, match="_t2.nii"):
        build_mri_splits("synthetic", tmp_path, train_contrasts=("flair", "t2"), **kwargs)


@pytest.mark.slow
def test_synthetic_brats_full_size_reads_back(tmp_path):
    paths = flair.write_synthetic_brats(tmp_path, n_subjects=2, seed=4)
    assert nifti.find_brats_subjects(tmp_path) == paths
    volumes = [nifti.load_volume(p, expected_shape=flair.BRATS_SHAPE) for p in paths]
    assert not np.array_equal(*volumes)
    assert nib.load(str(paths[0])).header.get_zooms() == (1.0, 1.0, 1.0)
    # The brain sits in the middle of the field of view, as in BraTS.
    fg = mri_prep.foreground_mask(volumes[0])
    centre = np.argwhere(fg).mean(axis=0)
    assert np.allclose(centre, np.array(flair.BRATS_SHAPE) / 2, atol=12)


# --- preprocessing and splits --------------------------------------------------------------

def test_preprocess_volume_shape_range_and_slab():
    x = mri_prep.preprocess_volume(flair.synth_flair_volume(3, shape=SMALL), n_slices=8, size=(32, 32))
    assert x.shape == (8, 32, 32) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() == 1.0
    with pytest.raises(InputError, match="at least n_slices=40"):
        mri_prep.select_slab(np.ones(SMALL, np.float32), 40)
    with pytest.raises(InputError, match="no foreground"):
        mri_prep.select_slab(np.zeros(SMALL, np.float32), 4)


def test_select_slab_picks_the_slices_with_the_object():
    volume = np.zeros((20, 20, 30), np.float32)
    volume[5:15, 5:15, 17:23] = 1.0
    slab = mri_prep.select_slab(volume, 4)
    assert slab.shape == (4, 20, 20) and slab[:, 10, 10].all()


def test_crop_resize_keeps_margin_of_background():
    # A 120-pixel square object, margin 0.25: the crop is 120 * 1.5 = 180 pixels, so the object
    # fills 2/3 of the output width with 1/6 of background on each side.
    slab = np.zeros((2, 240, 240), np.float32)
    slab[:, 70:190, 40:160] = 1.0
    out = mri_prep.crop_resize(slab, size=(90, 90), margin=0.25)
    assert out.shape == (2, 90, 90)
    inside = np.argwhere(out[0] > 0.5)
    assert inside.min(axis=0) == pytest.approx([15, 15], abs=1)
    assert inside.max(axis=0) == pytest.approx([74, 74], abs=1)


def test_split_subjects_deterministic_disjoint_and_complete():
    ids = [f"s{i:03d}" for i in range(23)]
    split = mri_prep.split_subjects(ids, fractions=(0.7, 0.15, 0.15), seed=9)
    assert split == mri_prep.split_subjects(list(reversed(ids)), fractions=(0.7, 0.15, 0.15), seed=9)
    assert split != mri_prep.split_subjects(ids, fractions=(0.7, 0.15, 0.15), seed=10)
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert set.union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)
    assert [len(p) for p in parts] == [17, 3, 3]
    tiny = mri_prep.split_subjects(["a", "b", "c"], fractions=(0.8, 0.1, 0.1), seed=0)
    assert all(len(tiny[k]) == 1 for k in tiny)
    with pytest.raises(ConfigError):
        mri_prep.split_subjects(ids, fractions=(0.5, 0.2, 0.2), seed=0)
    with pytest.raises(InputError, match="cannot fill"):
        mri_prep.split_subjects(["a", "b"], fractions=(0.8, 0.1, 0.1), seed=0)


# --- plant roots (OOD) ---------------------------------------------------------------------

ROOT_SHAPE = (48, 48, 40)


def test_root_volumes_deterministic_and_bright_on_dark():
    sets = roots.available_root_parameter_sets()
    assert "Zeamays_synMRI" in sets and all("synMRI" in s for s in sets)
    a = roots.root_volume("Zeamays_synMRI", seed=3, shape=ROOT_SHAPE)
    b = roots.root_volume("Zeamays_synMRI", seed=3, shape=ROOT_SHAPE)
    c = roots.root_volume("Zeamays_synMRI", seed=4, shape=ROOT_SHAPE)
    assert a.shape == ROOT_SHAPE and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    clean = roots.root_volume("Zeamays_synMRI", seed=3, shape=ROOT_SHAPE, noise_sigma=0.0)
    root, soil = clean > 0.3, clean < 0.01
    assert root.sum() > 50 and soil.mean() > 0.5
    assert a[root].mean() > 5 * a[soil].mean()


def test_root_volumes_write_and_read_back(tmp_path):
    paths = roots.write_root_volumes(tmp_path, n=2, seed=1, shape=ROOT_SHAPE, parameter_set=["Faba_synMRI", "wheat_synMRI"])
    assert nifti.find_nifti_volumes(tmp_path) == paths
    assert [p.name for p in paths] == ["root_001_Faba_synMRI.nii.gz", "root_002_wheat_synMRI.nii.gz"]
    assert nifti.load_volume(paths[1], expected_shape=ROOT_SHAPE).max() > 0.3
    with pytest.raises(ConfigError, match="not in CPlantBox"):
        roots.root_volume("Oak", seed=0)


def test_roots_without_cplantbox_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "plantbox", None)  # makes `import plantbox` raise ImportError
    with pytest.raises(MissingExtraError, match=r"'cplantbox'.*\.\[roots\]"):
        roots.root_volume("Zeamays_synMRI", seed=0)
