"""physdiff.io: atomic writes leave either the whole new file or the old one, readable as open() would make it."""

import os
import stat

import numpy as np
import pytest

from physdiff.io import atomic_path, save_json, save_npy


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        save_npy(tmp_path / "a.npy", np.zeros(3))
        with open(tmp_path / "plain", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.npy").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "row.json"
    save_json(path, {"ssim": 0.5})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text('{"ssim": ')  # half written
            raise RuntimeError("interrupted")
    assert path.read_text().strip().endswith("}") and "0.5" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["row.json"]
