"""What the `physdiff` subcommands share: the config, a run's tuned settings, notes, and writing outputs."""

from __future__ import annotations

import argparse
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from physdiff.config import SCHEMA_PATH, load_config
from physdiff.errors import ConfigError, InputError
from physdiff.io import atomic_path

#: the default config shipped with the package (config/config.yaml of the repository)
PACKAGE_CONFIG = SCHEMA_PATH.parents[2] / "config" / "config.yaml"


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the manual's paragraphs as written and show each option's default where its help does not."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def add_common(parser: argparse.ArgumentParser, *, results: bool = True) -> None:
    """--config (and --results): where the settings and a finished run's outputs are."""
    parser.add_argument("--config", default=None,
                        help="the run's config YAML (default: config/config.yaml in the current folder if it "
                             f"exists, else the package's default {PACKAGE_CONFIG})")
    if results:
        parser.add_argument("--results", default="results",
                            help="a finished default run's results folder: trained models, tuned settings")


def resolve_config(path: str | None) -> tuple[dict, Path]:
    """(validated config, its path): `path`, else ./config/config.yaml, else the package's default."""
    chosen = Path(path) if path else next((p for p in (Path("config/config.yaml"), PACKAGE_CONFIG) if p.is_file()),
                                          PACKAGE_CONFIG)
    try:
        return load_config(chosen), chosen
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if str(chosen) in message else f"{chosen}: {message}") from None


def read_json(path: Path) -> dict:
    """A JSON object from a results file; unreadable or not an object: an InputError naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def note(message: str) -> None:
    print(f"note: {message}", flush=True)


def tuned(path: Path, what: str, fallback: str, keys: Sequence[str] = ()) -> dict | None:
    """The tuning file at `path`, which must hold `keys` (None, with a printed note naming
    `fallback`, where the run has none)."""
    if not path.is_file():
        note(f"no tuning file {path}; {what} from {fallback}")
        return None
    data = read_json(path)
    missing = [k for k in keys if k not in data]
    if missing:
        raise InputError(f"{path}: lacks {missing}; expected a tuning file with {', '.join(keys)}")
    print(f"{what}: tuned, from {path}", flush=True)
    return data


def load_npy(path: str | Path, what: str) -> np.ndarray:
    """np.load of a user's .npy (no pickles); missing, unreadable or non-finite: an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected {what}, a .npy)")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise InputError(f"{path}: cannot read as .npy ({err}); expected {what}") from None
    if np.issubdtype(array.dtype, np.number) and not np.all(np.isfinite(array)):
        raise InputError(f"{path}: holds NaN or infinite values; expected {what} with finite values")
    return array


def partition_models(paths: Sequence[Path], *, modality: str, G: int, **checks) -> list:
    """The G partition models of a run, each checked by `load_partition_models`; a missing one names
    the file and the rule that trains it."""
    from physdiff.recon.run_prior import load_partition_models

    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(f"{missing[0]}: missing; the prior methods need the {G} trained {modality} partition "
                         f"models of a finished default run (the train_prior rule writes them; pass --results)")
    return load_partition_models([str(p) for p in paths], **checks)


def check_slices(models: Sequence, paths: Sequence[Path], slices: int, key: str) -> None:
    """The partition models' training slabs, stacked, must have the `slices` of the volume."""
    counts = [getattr(m, "data_mean", None) for m in models]
    if all(c is not None for c in counts) and sum(int(c.shape[0]) for c in counts) != slices:
        total = sum(int(c.shape[0]) for c in counts)
        raise InputError(f"{paths[0].parent.parent}: the partition models were trained on slabs of {total} slices, "
                         f"the volume has {slices} ({key}); pass the --config of the run that trained them")


def write_outputs(writers: Sequence[tuple[Path, str, Callable[[Path], Any]]]) -> None:
    """Write every output to a temporary file beside it, then move them all into place: an error in
    any writer leaves none of them behind. Each writer is (path, temporary suffix, write(tmp))."""
    with ExitStack() as stack:
        temporaries = [(stack.enter_context(atomic_path(path, suffix=suffix)), write) for path, suffix, write in writers]
        for tmp, write in temporaries:
            write(tmp)


def check_output(path: str | Path, suffixes: Sequence[str]) -> Path:
    """The output path, checked for its suffix and a folder that can hold it."""
    path = Path(path)
    if not any(path.name.endswith(s) for s in suffixes):
        raise InputError(f"--out {path}: expected a file name ending in {' or '.join(suffixes)}")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"--out {path}: {path.parent} is not a folder")
    return path


def beside(path: Path, suffix: str, *, strip: Sequence[str]) -> Path:
    """`path` with its suffix (the first of `strip` it ends in) replaced by `suffix`."""
    for s in strip:
        if path.name.endswith(s):
            return path.with_name(path.name[: -len(s)] + suffix)
    return path.with_name(path.name + suffix)


class Stopwatch:
    """Wall seconds since it was made."""

    def __init__(self):
        self.start = time.perf_counter()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.start:.1f} s"


def median_value(grid: Sequence[float]) -> float:
    """The middle value of a tuning grid: the untuned fallback of a weight."""
    values = sorted(float(v) for v in grid)
    return values[len(values) // 2]


def dart_settings_of(lay, modality: str, cfg: dict, mask: str | None = None) -> dict:
    """DART's settings that tune_dart chose for the mask (4D-STEM: "full"), else the config's recon.dart."""
    from physdiff.config import dart_settings

    chosen = tuned(lay.tuning(modality, "dart", mask=mask), "DART's settings", "the config's recon.dart",
                   keys=("settings",))
    return chosen["settings"] if chosen else dart_settings(cfg)


def drift_k_m(lay, modality: str, cfg: dict, mask: str | None = None) -> tuple[int, int]:
    """DRIFT's solver iterations K and refined candidates M that tune_drift chose, else the config's."""
    rc = cfg["recon"]["drift"]
    chosen = tuned(lay.tuning(modality, "drift", mask=mask), "DRIFT's K and M",
                   f"the config (K: the middle of recon.drift.n_iter_grid.{modality}; "
                   f"M: recon.drift.refine_top.{modality})", keys=("n_iter",))
    if chosen:
        return int(chosen["n_iter"]), int(chosen.get("refine_top", 1))
    return int(median_value(rc["n_iter_grid"][modality])), int(rc["refine_top"][modality])


def drift_candidates(lay, modality: str, shape: Sequence[int], cfg: dict) -> np.ndarray:
    """The first recon.drift.n_candidates of the run's pool of prior samples, (N, S, H, W) in [0, 1]."""
    pool = lay.candidates(modality)
    if not pool.is_file():
        raise InputError(f"{pool}: missing; DRIFT needs the run's pool of prior samples (the drift_candidates rule)")
    candidates = load_npy(pool, "DRIFT's candidates (N, S, H, W)")
    if candidates.ndim != 4 or candidates.shape[1:] != tuple(shape):
        raise InputError(f"{pool}: candidates {candidates.shape}, expected (N, {', '.join(map(str, shape))})")
    return candidates[: cfg["recon"]["drift"]["n_candidates"][modality]]
