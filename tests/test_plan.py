"""The 4D-STEM sample plan that the workflow enumerates jobs from."""

import re

import pytest

from physdiff.config import validate_config
from physdiff.data.plan import stem_plan, stem_tuning_samples
from physdiff.errors import ConfigError


def _cfg(**stem):
    return validate_config({"stem": stem})


def test_default_plan_splits_by_crystal_and_keeps_paper_crystals_in_test():
    plan = stem_plan(_cfg())
    split_of = {}
    for row in plan:
        assert split_of.setdefault(row["name"], row["split"]) == row["split"], "a crystal spans two splits"
    assert split_of["CoPt3"] == split_of["Tb3InC"] == "test"
    assert {split_of[n] for n in ("Co", "WC", "ZnO", "MoS2")} == {"ood"}
    assert {"train", "val", "test"} <= set(split_of.values())
    assert len({r["sample"] for r in plan}) == len(plan)
    # catalogue samples follow <crystal>_<axis>_<k>, the pattern of rule simulate_crystal
    cubic = [r for r in plan if r["split"] != "ood"]
    assert len(cubic) == 48 * 3 * 2
    assert all(re.fullmatch(r"[A-Za-z0-9]+_(001|011|111)_[01]", r["sample"]) for r in cubic)


def test_plan_is_deterministic_and_seeded():
    assert stem_plan(_cfg()) == stem_plan(_cfg())
    a = {r["name"]: r["split"] for r in stem_plan(validate_config({"seed": 1}))}
    b = {r["name"]: r["split"] for r in stem_plan(validate_config({"seed": 2}))}
    assert a != b


def test_user_structures_join_the_test_split(tmp_path):
    plan = stem_plan(_cfg(cif_files=[str(tmp_path / "my crystal.cif")], materials_project_ids=["mp-149"]))
    user = {r["sample"]: r for r in plan if r["source"] != "catalogue"}
    assert set(user) == {"user-my-crystal", "mp-149"}
    assert all(r["split"] == "test" for r in user.values())


def test_unknown_crystal_is_a_config_error():
    with pytest.raises(ConfigError, match="stem.crystals.*Unobtainium"):
        stem_plan(_cfg(crystals=["CoPt3", "Unobtainium"]))


def test_recon_order_spans_crystals_and_axes_first():
    from physdiff.data.plan import recon_order

    rows = [r for r in stem_plan(_cfg()) if r["split"] == "test"]
    order = recon_order(rows)
    assert sorted(order) == sorted(r["sample"] for r in rows)
    n_crystals = len({r["name"] for r in rows})
    first = [s.rsplit("_", 2) for s in order[:n_crystals]]
    assert [name for name, _, _ in first[:2]] == ["CoPt3", "Tb3InC"]
    assert len({name for name, _, _ in first}) == n_crystals, "the first pass visits every crystal once"
    assert {axis for _, axis, _ in first[:3]} == {"001", "011", "111"}


def test_stem_tuning_samples_take_the_first_validation_sample_of_each_crystal():
    rows = stem_plan(_cfg())
    val = [r for r in rows if r["split"] == "val"]
    crystals = list(dict.fromkeys(r["name"] for r in val))
    names = stem_tuning_samples(rows, 2)
    assert len(names) == 2
    # the first planned validation sample of the first two validation crystals, nothing else
    assert names == [next(r["sample"] for r in val if r["name"] == c) for c in crystals[:2]]
    assert len(stem_tuning_samples(rows, 100)) == len(crystals)  # one per crystal at most
