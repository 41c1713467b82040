"""The config schema: defaults, clear rejection of bad keys, and the generated key reference."""

from pathlib import Path

import pytest
import yaml

from physdiff.config import load_config, schema_markdown, validate_config
from physdiff.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", ["config/config.yaml", "config/paper.yaml", ".test/config/config.yaml"])
def test_shipped_configs_are_valid(path):
    cfg = load_config(ROOT / path)
    assert cfg["mri"]["n_slices"] >= 1


def test_defaults_fill_an_empty_config():
    cfg = validate_config({})
    assert cfg["mri"]["size"] == [64, 64]
    assert cfg["stem"]["simulation"]["energy"] == 200000
    assert cfg["mri"]["split"] == {"train": 0.7, "val": 0.1, "test": 0.2}


@pytest.mark.parametrize(
    "bad, key, expected",
    [
        ({"mri": {"n_slices": -3}}, "mri.n_slices", "less than the minimum"),
        ({"mri": {"bogus": 1}}, "mri", "'bogus' was unexpected"),
        ({"stem": {"simulation": {"gpts": "sixty-four"}}}, "stem.simulation.gpts", "not of type 'integer'"),
        ({"mri": {"masks": {"kinds": ["spiral"]}}}, "mri.masks.kinds.0", "is not one of"),
        ({"mri": {"split": {"train": 0.5}}}, "mri.split", "must sum to 1"),
        ({"mri": {"source": "brats"}}, "mri.path", "required when mri.source is 'brats'"),
        ({"stem": {"simulation": {"gpts": 66}}}, "stem.simulation.gpts", "prime factor 11"),
        ({"mri": {"masks": {"accelerations": [4, 6]}}}, "mri.masks.center_fraction", "R=6"),
        ({"stem": {"materials_project_ids": ["1234"]}}, "stem.materials_project_ids.0", "does not match"),
        ({"recon": {"mri": {"ood_masks": ["spiral_R4"]}}}, "recon.mri.ood_masks.0", "does not match"),
        ({"mri": {"masks": {"kinds": ["uniform"]}}}, "recon.mri.ood_masks", "not built by mri.masks"),
        ({"prior": {"partitions": {"mri": [40]}}}, "prior.partitions.mri", "G=40 exceeds"),
        ({"mri": {"size": [62, 64]}}, "prior.model.dim_mults", "divisible by 4"),
        ({"prior": {"sampling": {"sampler": "euler"}}}, "prior.sampling.sampler", "is not one of"),
        ({"metrics": {"table3_counts": [4, 50]}}, "metrics.table3_counts", "[50] exceed the 8 volumes"),
        ({"recon": {"mri": {"cs_levels": 0}}}, "recon.mri.cs_levels", "less than the minimum"),
        ({"mri": {"train_contrasts": ["t1", "t2"]}}, "mri.train_contrasts", "lacks flair"),
        ({"mri": {"train_contrasts": ["flair", "pd"]}}, "mri.train_contrasts.1", "is not one of"),
        ({"mri": {"train_contrasts": ["flair", "t1ce"]}}, "mri.train_contrasts", "draws flair, t1 and t2"),
        ({"mri": {"source": "nifti", "path": "x", "train_contrasts": ["flair", "t1"]}}, "mri.train_contrasts",
         "only [flair] with mri.source 'nifti'"),
    ],
)
def test_schema_rejects_bad_config_naming_the_key(bad, key, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(bad)
    assert f"'{key}'" in str(info.value)
    assert expected in str(info.value)


def test_load_config_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("mri: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_config_readme_documents_every_key():
    readme = (ROOT / "config" / "README.md").read_text()
    assert schema_markdown() in readme, "regenerate with: python -m physdiff.config --markdown"


def test_every_default_config_key_is_in_the_schema():
    # The default config spells keys out for users; none of them may be a typo the schema ignores.
    validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))


def test_only_periodic_modalities_get_circular_padding():
    from physdiff.config import prior_model_config

    cfg = load_config(ROOT / "config/config.yaml")
    assert cfg["prior"]["periodic"] == {"mri": False, "stem": True}
    assert prior_model_config(cfg, "stem") == {**cfg["prior"]["model"], "padding": "circular"}
    # MRI's is prior.model itself: train_prior's recorded params, and so its models, stay as they were
    assert prior_model_config(cfg, "mri") is cfg["prior"]["model"]
