"""The 4D-STEM sample plan: which (crystal, zone axis, offset) lands in which split.

The plan is a pure function of the config, so Snakemake can enumerate one simulation job per
sample when it builds the DAG. Catalogue crystals are split by crystal (test crystals are never
seen in training; CoPt3 and Tb3InC always go to test), hexagonal crystals form the `ood` split,
and user CIF files and Materials Project ids join the test split.
"""

from __future__ import annotations

import re
from pathlib import Path

from physdiff.data.crystals import catalogue, hexagonal_ood
from physdiff.data.stem_sim import split_crystals, stem_sample_plan
from physdiff.errors import ConfigError


def _entries(names, known, key):
    by_name = {e.name: e for e in known}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"config key '{key}': unknown crystal(s) {unknown}; known: {sorted(by_name)}")
    return [by_name[n] for n in names]


def stem_plan(cfg: dict) -> list[dict]:
    """Rows {sample, split, source, name, zone_axis, offset, seed[, path]} for every simulation."""
    stem, seed = cfg["stem"], cfg["seed"]
    cubic = catalogue() if stem["crystals"] is None else _entries(stem["crystals"], catalogue(), "stem.crystals")
    splits = split_crystals([e.name for e in cubic], fractions=stem["split"], seed=seed)
    split_of = {name: split for split, names in splits.items() for name in names}

    rows = []
    plan = stem_sample_plan(cubic, zone_axes=stem["zone_axes"], offsets_per_axis=stem["offsets_per_axis"], seed=seed)
    for item in plan:
        rows.append(_row(item, split_of[item["name"]], "catalogue"))
    hexagonal = _entries(stem["ood"], hexagonal_ood(), "stem.ood")
    for item in stem_sample_plan(hexagonal, zone_axes=stem["ood_zone_axes"], offsets_per_axis=1, seed=seed):
        rows.append(_row(item, "ood", "catalogue"))
    # User structures are named user-<file stem> and mp-<id>: the "-" keeps them apart from
    # catalogue samples (<crystal>_<axis>_<k>) in the Snakemake output patterns.
    for path in stem["cif_files"]:
        name = "user-" + re.sub(r"[^A-Za-z0-9]+", "-", Path(path).name.removesuffix(".cif")).strip("-")
        rows.append({"sample": name, "split": "test", "source": "cif", "name": name, "path": path,
                     "zone_axis": "001", "offset": (0.0, 0.0), "seed": seed})
    for mp_id in stem["materials_project_ids"]:
        rows.append({"sample": mp_id, "split": "test", "source": "mp", "name": mp_id,
                     "zone_axis": "001", "offset": (0.0, 0.0), "seed": seed})
    names = [r["sample"] for r in rows]
    if len(set(names)) != len(names):
        raise ConfigError("config keys 'stem.cif_files'/'stem.materials_project_ids': two samples share a name")
    return rows


def recon_order(rows: list[dict]) -> list[str]:
    """Sample names in the order reconstructions take them, so the first few span the split.

    Round robin over crystals (CoPt3 and Tb3InC first, then plan order); crystal i starts its
    own list at zone axis i, so the first pass already mixes zone axes.
    """
    by_crystal: dict[str, list[dict]] = {}
    for row in rows:
        by_crystal.setdefault(row["name"], []).append(row)
    names = sorted(by_crystal, key=lambda n: (n not in ("CoPt3", "Tb3InC"), n != "CoPt3"))
    queues = []
    for i, name in enumerate(names):
        items = by_crystal[name]
        axes = list(dict.fromkeys(r["zone_axis"] for r in items))
        turn = {axis: (j - i) % len(axes) for j, axis in enumerate(axes)}
        queues.append(sorted(items, key=lambda r: (items.index(r) % max(1, len(items) // len(axes)), turn[r["zone_axis"]])))
    order = []
    for depth in range(max((len(q) for q in queues), default=0)):
        order += [q[depth]["sample"] for q in queues if depth < len(q)]
    return order


def stem_tuning_samples(rows: list[dict], n_val: int) -> list[str]:
    """Validation samples that tune the 4D-STEM baselines: the first of each crystal, `n_val` of them.

    One per crystal, so that a handful of samples still covers several structures.
    """
    first: dict[str, str] = {}
    for row in rows:
        if row["split"] == "val" and row["source"] == "catalogue":
            first.setdefault(row["name"], row["sample"])
    return list(first.values())[:n_val]


def _row(item: dict, split: str, source: str) -> dict:
    return {"sample": item["sample_id"], "split": split, "source": source, "name": item["name"],
            "zone_axis": item["zone_axis"], "offset": tuple(item["offset"]), "seed": item["seed"]}
