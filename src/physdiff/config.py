"""Configuration: validation against the JSON schema, defaults, and the key reference.

The schema in `workflow/schemas/config.schema.yaml` is the single source of truth for every key,
its type, its default and its description. `validate_config` fills the defaults and turns every
violation into one `ConfigError` that names the key and what was expected; `schema_markdown`
renders the schema as the table in `config/README.md`.

Run `python -m physdiff.config --markdown` to regenerate that README, or
`python -m physdiff.config CONFIG.yaml` to check a config file without running the pipeline.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import jsonschema
import yaml

from physdiff.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """Read the YAML schema, with every local `$ref` replaced by the definition it names."""
    with open(path) as fh:
        schema = yaml.safe_load(fh)
    definitions = schema.pop("definitions", {})

    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                ref = definitions[node["$ref"].removeprefix("#/definitions/")]
                node = {**ref, **{k: v for k, v in node.items() if k != "$ref"}}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def _with_defaults(validator_class):
    """Extend a jsonschema validator so that `properties` fills missing keys with their defaults."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if key not in instance and "default" in sub:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def _key(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Validate `config` in place, filling defaults; raise ConfigError naming every bad key."""
    schema = load_schema() if schema is None else schema
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            hint = err.schema.get("description", "") if isinstance(err.schema, dict) else ""
            line = f"  config key '{_key(err)}': {err.message}"
            if hint and err.validator not in ("additionalProperties",):
                line += f"\n    expected: {hint.strip()}"
            lines.append(line)
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    _check_semantics(config)
    return config


def _check_semantics(cfg: dict) -> None:
    """Checks that a JSON schema cannot express: sums, cross-key requirements, prime factors."""
    problems = []
    for section in ("mri", "stem"):
        split = cfg[section]["split"]
        total = split["train"] + split["val"] + split["test"]
        if abs(total - 1.0) > 1e-6:
            problems.append(f"config key '{section}.split': fractions must sum to 1, got {total:g}")
    mri = cfg["mri"]
    if mri["source"] != "synthetic" and not mri["path"]:
        problems.append(f"config key 'mri.path': required when mri.source is '{mri['source']}'")
    contrasts = mri["train_contrasts"]
    if "flair" not in contrasts:
        problems.append(f"config key 'mri.train_contrasts': {contrasts} lacks flair, the modality reconstructed and tested")
    elif contrasts != ["flair"] and mri["source"] == "nifti":
        problems.append("config key 'mri.train_contrasts': only [flair] with mri.source 'nifti' "
                        "(a folder of volumes has no other modalities of its subjects)")
    elif "t1ce" in contrasts and mri["source"] == "synthetic":
        problems.append("config key 'mri.train_contrasts': the synthetic generator draws flair, t1 and t2, not t1ce")
    if mri["source"] == "synthetic" and mri["n_slices"] > mri["volume_shape"][2]:
        problems.append(
            f"config key 'mri.n_slices': {mri['n_slices']} exceeds the {mri['volume_shape'][2]} "
            "axial slices of mri.volume_shape"
        )
    cf = mri["masks"]["center_fraction"]
    for r in mri["masks"]["accelerations"]:
        if str(r) not in {str(k) for k in cf}:
            problems.append(f"config key 'mri.masks.center_fraction': no entry for acceleration R={r}")
    built = {f"{k}_R{r}" for k in mri["masks"]["kinds"] for r in mri["masks"]["accelerations"]}
    for name in cfg["recon"]["mri"]["ood_masks"]:
        if name not in built:
            problems.append(
                f"config key 'recon.mri.ood_masks': mask '{name}' is not built by mri.masks (built: {sorted(built)})"
            )
    gpts = cfg["stem"]["simulation"]["gpts"]
    if largest_prime_factor(gpts) > 7:
        problems.append(
            f"config key 'stem.simulation.gpts': {gpts} has the prime factor {largest_prime_factor(gpts)}; "
            "use a size with prime factors 2, 3, 5 and 7 only (FFT speed)"
        )
    prior = cfg["prior"]
    factor = 2 ** (len(prior["model"]["dim_mults"]) - 1)
    sim = cfg["stem"]["simulation"]
    grids = {"mri": (mri["n_slices"], *mri["size"]), "stem": (sim["n_slices"], sim["gpts"], sim["gpts"])}
    for modality, (n_slices, h, w) in grids.items():
        if not prior["partitions"][modality]:
            continue
        if h % factor or w % factor:
            key = "mri.size" if modality == "mri" else "stem.simulation.gpts"
            problems.append(
                f"config key 'prior.model.dim_mults': {len(prior['model']['dim_mults'])} levels need {key} "
                f"divisible by {factor}, got {h} x {w}"
            )
        for G in prior["partitions"][modality]:
            if G > n_slices:
                problems.append(f"config key 'prior.partitions.{modality}': G={G} exceeds the {n_slices} slices")
        if prior["partitions"][modality] and cfg["recon"]["partitions"][modality] not in prior["partitions"][modality]:
            problems.append(
                f"config key 'recon.partitions.{modality}': DART and DRIFT need a trained G, one of "
                f"prior.partitions.{modality} = {prior['partitions'][modality]}, got {cfg['recon']['partitions'][modality]}"
            )
    n_gen = prior["generate"]["n_volumes"]
    too_many = [c for c in cfg["metrics"]["table3_counts"] if c > n_gen]
    if too_many:
        problems.append(f"config key 'metrics.table3_counts': {too_many} exceed the {n_gen} volumes generated per "
                        "setting (prior.generate.n_volumes)")
    if cfg["recon"]["dart"]["mri_tune_mask"] not in built:
        problems.append(f"config key 'recon.dart.mri_tune_mask': mask '{cfg['recon']['dart']['mri_tune_mask']}' "
                        f"is not built by mri.masks (built: {sorted(built)})")
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join("  " + p for p in problems))


def largest_prime_factor(n: int) -> int:
    """Largest prime factor of a positive integer (1 for n = 1)."""
    largest, p = 1, 2
    while p * p <= n:
        while n % p == 0:
            largest, n = p, n // p
        p += 1
    return max(largest, n) if n > 1 else largest


def center_fraction(cfg: dict, acceleration: int) -> float:
    """The centre fraction configured for acceleration R (YAML may key it by int or str)."""
    table = {str(k): v for k, v in cfg["mri"]["masks"]["center_fraction"].items()}
    return float(table[str(acceleration)])


DART_KEYS = ("sampler", "steps", "eta", "correction", "n_samples", "seam", "start", "mean_snr")


def dart_settings(cfg: dict) -> dict:
    """DART's starting settings from a validated config (`recon.dart`): what tune_dart varies its
    grid around and what `physdiff.recon.dart.dart` takes as keyword arguments."""
    return {k: cfg["recon"]["dart"][k] for k in DART_KEYS}


def adapt_settings(cfg: dict) -> dict:
    """Per-scan adaptation's settings (`recon.dart.adapt` without its `enabled` switch): what
    `physdiff.recon.adapt.AdaptSettings` and `dart(adapt=...)` take."""
    return {k: v for k, v in cfg["recon"]["dart"]["adapt"].items() if k != "enabled"}


def mri_problem_config(cfg: dict) -> dict:
    """What `physdiff.recon.run_prior.build_problem` needs for MRI, from a validated config."""
    rc = cfg["recon"]
    return {"noise_std": rc["mri"]["noise_std"], "seed": cfg["seed"], "lam": rc["dart"]["mri_lambda"],
            "solver": rc["drift"]["mri_solver"], "wavelet": rc["mri"]["cs_wavelet"], "levels": rc["mri"]["cs_levels"]}


def prior_model_config(cfg: dict, modality: str) -> dict:
    """The U-Net settings of a modality's partition models: `prior.model`, with circular padding
    where `prior.periodic.<modality>` is set. MRI's dict is `prior.model` itself, so a results
    folder trained before `prior.periodic` existed keeps its MRI models' recorded params."""
    model = cfg["prior"]["model"]
    return {**model, "padding": "circular"} if cfg["prior"]["periodic"][modality] else model


def stem_problem_config(cfg: dict) -> dict:
    """What `physdiff.recon.run_prior.build_problem` needs for 4D-STEM, from a validated config."""
    rc = cfg["recon"]
    solver = rc["drift"]["stem_solver"]
    return {"k": rc["dart"]["stem_k"], "sparsity": rc["dart"]["stem_sparsity"], "loss": rc["stem"]["loss"],
            "solver": solver, "solver_params": rc["stem"][solver], "align": rc["drift"]["stem_align"]}


def drift_pool_seed(cfg: dict) -> int:
    """Seed of DRIFT's candidate pool (the drift_candidates rule): the config's seed offset so
    that the pool is drawn apart from the generated volumes of Table 3."""
    return int(cfg["seed"]) + 7919


def load_config(path: str | Path) -> dict:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    return validate_config(cfg)


def schema_markdown(schema: dict | None = None) -> str:
    """Render every key of the schema as a Markdown table (key, type, default, description)."""
    schema = load_schema() if schema is None else schema
    rows: list[tuple[str, str, str, str]] = []

    def walk(node: dict, prefix: str) -> None:
        for key, sub in node.get("properties", {}).items():
            name = f"{prefix}{key}"
            kind = sub.get("type", "")
            kind = " or ".join(kind) if isinstance(kind, list) else kind
            if "enum" in sub:
                kind += " (" + ", ".join(map(str, sub["enum"])) + ")"
            default = "" if sub.get("type") == "object" and "properties" in sub else f"`{yaml.safe_dump(sub.get('default'), default_flow_style=True).strip().removesuffix('...').strip()}`"
            desc = " ".join(str(sub.get("description", "")).split())
            rows.append((name, kind, default, desc))
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub, name + ".")

    walk(schema, "")
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    out += [f"| `{k}` | {t} | {d} | {m} |" for k, t, d, m in rows]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="a YAML config file to validate")
    parser.add_argument("--markdown", action="store_true", help="print the key reference as Markdown")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(schema_markdown())
        return 0
    if not args.config:
        parser.error("give a config file or --markdown")
    try:
        load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.config}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
