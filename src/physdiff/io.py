"""Small file helpers shared by the pipeline: atomic writes and array archives.

Writes go to a temporary file in the target folder and are moved into place with
`os.replace`, so an interrupted job never leaves a half-written output behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.

    The file gets the permissions a plain `open(path, "w")` would give (0666 less the umask), not
    mkstemp's owner-only 0600, so results stay readable to a group that shares them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Write arrays to a compressed `.npz` atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically, with sorted keys and an indent for readable diffs."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_to_builtin) + "\n")


def _to_builtin(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array to `.npy` atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def save_csv_rows(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write a list of flat dicts as a CSV table atomically (columns in first-seen order)."""
    import pandas as pd

    with atomic_path(path, suffix=".csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
