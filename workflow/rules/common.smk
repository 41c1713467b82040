# Shared set-up: config validation, the sample plan, and input/output helpers.

from snakemake.exceptions import WorkflowError

# physdiff must be importable here (pip install -e .). Jobs that run in a `--sdm conda`
# environment, where it is not installed, find it through the symlink workflow/scripts/physdiff,
# since Snakemake puts each script's folder on sys.path.

from physdiff.config import validate_config, adapt_settings, center_fraction, dart_settings, drift_pool_seed, mri_problem_config, prior_model_config, stem_problem_config
from physdiff.errors import PhysdiffError

try:
    validate_config(config)
except PhysdiffError as exc:
    raise WorkflowError(str(exc)) from None

from physdiff.data.mri_dataset import planned_split_sizes
from physdiff.data.plan import recon_order, stem_plan, stem_tuning_samples as plan_stem_tuning_samples

try:
    STEM_PLAN = stem_plan(config)
    MRI_SPLIT_SIZES = planned_split_sizes(
        config["mri"]["source"], config["mri"]["path"], config["mri"]["n_subjects"], config["mri"]["split"], config["seed"]
    )
except PhysdiffError as exc:
    raise WorkflowError(str(exc)) from None

# On SLURM, a job ended by scancel ("CANCELLED by <uid>" in sacct) must count as failed, so that
# the run goes on (and train_prior's retries resume it) instead of waiting for it for ever.
from physdiff.slurm import tolerate_cancelled_by

tolerate_cancelled_by()

STEM_SAMPLES = {row["sample"]: row for row in STEM_PLAN}
MRI_CFG = config["mri"]
MASK_IDS = [f"{k}_R{r}" for k in MRI_CFG["masks"]["kinds"] for r in MRI_CFG["masks"]["accelerations"]]


wildcard_constraints:
    split="train|val|test|ood",
    kind="uniform|gaussian|random",
    R=r"\d+",
    crystal="[A-Za-z0-9]+",


localrules:
    fetch_materials_project,


def mri_raw_dir(wildcards=None):
    """The folder the MRI volumes are read from: generated, or the user's data."""
    if MRI_CFG["source"] == "synthetic":
        return rules.synthesize_flair.output[0]
    return MRI_CFG["path"]


def mri_ood_outputs():
    return [rules.prepare_roots.output.ood] if MRI_CFG["ood"]["enabled"] else []


def mri_mask_outputs():
    return expand("results/data/mri/masks/{mask}.npy", mask=MASK_IDS)


def stem_sample_outputs(split=None):
    return [
        f"results/data/stem/{row['split']}/{row['sample']}.npz"
        for row in STEM_PLAN
        if split is None or row["split"] == split
    ]


def stem_rows(crystal, split):
    """The planned samples of one catalogue crystal in one split, in plan order."""
    return [r for r in STEM_PLAN if r["name"] == crystal and r["split"] == split and r["source"] == "catalogue"]


def stem_structure_input(wildcards):
    """The CIF file of a user or Materials Project sample."""
    row = STEM_SAMPLES[wildcards.user_sample]
    return row["path"] if row["source"] == "cif" else f"results/data/stem/structures/{row['name']}.cif"


def stem_figure_samples():
    """The CoPt3 sample and the hexagonal example that the dataset figure shows."""
    cubic = next((r for r in STEM_PLAN if r["name"] == "CoPt3"), STEM_PLAN[0])
    hexa = next(
        (r for r in STEM_PLAN if r["split"] == "ood" and r["name"] == config["figures"]["hexagonal_example"]),
        next((r for r in STEM_PLAN if r["split"] == "ood"), cubic),
    )
    return {
        kind: f"results/data/stem/{row['split']}/{row['sample']}.npz"
        for kind, row in (("cubic", cubic), ("hexagonal", hexa))
    }


# --- reconstructions -------------------------------------------------------------------------

RECON = config["recon"]


# The MRI datasets reconstructed, each with its masks: the BraTS-like test split at every mask,
# and the OOD roots (if enabled) at recon.mri.ood_masks.
MRI_SETS = [("brats", MASK_IDS)] + ([("roots", RECON["mri"]["ood_masks"])] if MRI_CFG["ood"]["enabled"] else [])
MRI_DATASETS = [dataset for dataset, _ in MRI_SETS]


def _first(items):
    return list(items)[: RECON["max_samples"]] if RECON["max_samples"] else list(items)


def mri_recon_samples(dataset):
    """Indices of the MRI volumes reconstructed: the first of the test (or OOD) array."""
    n = MRI_SPLIT_SIZES["test"] if dataset == "brats" else MRI_CFG["ood"]["n_volumes"]
    return _first(str(i) for i in range(n))


def stem_recon_samples(split):
    """Planned 4D-STEM samples reconstructed; see physdiff.data.plan.recon_order."""
    return _first(recon_order([r for r in STEM_PLAN if r["split"] == split]))


def mri_volumes_of(dataset):
    """The array of MRI volumes that `dataset` (brats: the test split; roots: the OOD set) reconstructs."""
    return rules.prepare_mri.output.test if dataset == "brats" else rules.prepare_roots.output.ood


def mri_tuning_of(wildcards):
    """The chosen regularisation weight (tuned on the BraTS validation split, also for OOD)."""
    if wildcards.method == "zero_filled":
        return []
    return f"results/recon/mri/tuning/{wildcards.mask}/{wildcards.method}.json"


def stem_tuning_samples(wildcards=None):
    """Validation samples that tune the 4D-STEM baselines (physdiff.data.plan.stem_tuning_samples)."""
    names = plan_stem_tuning_samples(STEM_PLAN, RECON["stem"]["tuning"]["n_val"])
    return [f"results/data/stem/val/{name}.npz" for name in names]


def baseline_metrics():
    """Every metrics row the baseline table gathers."""
    out = []
    for dataset, masks in MRI_SETS:
        out += expand(
            "results/recon/mri/{dataset}/{mask}/{method}/{sample}.json",
            dataset=dataset, mask=masks, method=RECON["mri"]["methods"], sample=mri_recon_samples(dataset),
        )
    for split in ("test", "ood"):
        out += expand(
            "results/recon/stem/{split}/{method}/{sample}.json",
            split=split, method=RECON["stem"]["methods"], sample=stem_recon_samples(split),
        )
    return out


# --- the diffusion prior ---------------------------------------------------------------------

PRIOR = config["prior"]


def prior_training_data(wildcards):
    return rules.prepare_mri.output.train if wildcards.modality == "mri" else rules.prior_data_stem.output.volumes


def prior_validation_data(wildcards):
    """Validation volumes in the prior's [0, 1], for the validation loss of train_prior."""
    return rules.prepare_mri.output.val if wildcards.modality == "mri" else rules.prior_data_stem.output.val


def partition_models(wildcards):
    return expand(
        "results/prior/{modality}/G{G}/g{g}/model.pt", modality=wildcards.modality, G=wildcards.G, g=range(int(wildcards.G))
    )


def volume_shape(wildcards):
    """(S, H, W) of one volume of a modality."""
    if wildcards.modality == "mri":
        return [MRI_CFG["n_slices"], *MRI_CFG["size"]]
    sim = config["stem"]["simulation"]
    return [sim["n_slices"], sim["gpts"], sim["gpts"]]


def prior_outputs():
    """Every partition model, the generated volumes and their figures."""
    out = []
    for modality, counts in PRIOR["partitions"].items():
        for G in counts:
            out += expand("results/prior/{m}/G{G}/g{g}/model.pt", m=modality, G=G, g=range(G))
            out.append(f"results/generated/{modality}/G{G}.npy")
        if counts:
            out.append(f"results/figures/generated_{modality}.png")
    return out


# --- DART and DRIFT ---------------------------------------------------------------------------

DART_G = RECON["partitions"]


def dart_models(wildcards):
    G = DART_G[wildcards.modality]
    return expand("results/prior/{m}/G{G}/g{g}/model.pt", m=wildcards.modality, G=G, g=range(G))


def prior_transform(wildcards):
    """The transform stored beside the 4D-STEM training potentials (MRI needs none)."""
    return {"transform": rules.prior_data_stem.output.scale} if wildcards.modality == "stem" else {}


def validation_inputs(wildcards):
    """The validation volumes (measured with the mask being tuned) or samples of tune_dart and tune_drift."""
    if wildcards.modality == "mri":
        if wildcards.mask == "full":
            raise WorkflowError("MRI settings are tuned per mask: results/recon/mri/tuning/<kind>_R<rate>/...")
        mask = wildcards.mask
        return {
            "val": rules.prepare_mri.output.val,
            "mask": f"results/data/mri/masks/{mask}.npy",
            "solver_tuning": f"results/recon/mri/tuning/{mask}/{RECON['drift']['mri_solver']}.json",
        }
    if wildcards.mask != "full":
        raise WorkflowError("4D-STEM measures every scan position: its settings live in results/recon/stem/tuning/full/")
    val = [f"results/data/stem/val/{s}.npz" for s in recon_order([r for r in STEM_PLAN if r["split"] == "val"])]
    if not val:
        raise WorkflowError("DART and DRIFT choose their settings on validation crystals, but stem.split.val gives none")
    return {
        "val": val[: RECON["n_val"]["stem"]],
        "solver_tuning": f"results/recon/stem/tuning/{RECON['drift']['stem_solver']}.json",
        **prior_transform(wildcards),
    }


def problem_params(modality):
    """What physdiff.recon.run_prior.build_problem needs, from the config."""
    return mri_problem_config(config) if modality == "mri" else stem_problem_config(config)


DART_BASE = dart_settings(config)
# recon.dart.adapt without `enabled`: the settings of physdiff.recon.adapt.AdaptSettings
DART_ADAPT = adapt_settings(config)
# DART and DRIFT are tuned per MRI mask (as the baselines are); 4D-STEM's one setting is "full"
TUNING_MASKS = "|".join([*MASK_IDS, "full"])
# plain DART, and DART with the prior adapted to each scan (recon.dart.adapt), on both modalities
DART_METHODS = ["dart", "dart_adapt"] if RECON["dart"]["adapt"]["enabled"] else ["dart"]
# "DART, self-validated": per scan, the held-out check chooses among these (physdiff.recon.select)
SELFVAL_FROM = [*DART_METHODS, "cs_l1_wavelet"]


def mri_test_inputs(wildcards):
    return {
        "volumes": mri_volumes_of(wildcards.dataset),
        "mask": f"results/data/mri/masks/{wildcards.mask}.npy",
        "solver_tuning": f"results/recon/mri/tuning/{wildcards.mask}/{RECON['drift']['mri_solver']}.json",
    }


def stem_test_inputs(wildcards):
    return {
        "sample": f"results/data/stem/{wildcards.split}/{wildcards.sample}.npz",
        "transform": rules.prior_data_stem.output.scale,
        "solver_tuning": f"results/recon/stem/tuning/{RECON['drift']['stem_solver']}.json",
    }


def prior_recon_metrics():
    """Every DART, DRIFT and physics-only metrics row of Tables 1 and 2."""
    out = []
    for dataset, masks in MRI_SETS:
        out += expand(
            "results/recon/mri/{dataset}/{mask}/{method}/{sample}.json",
            dataset=dataset, mask=masks, method=[*DART_METHODS, "dart_selfval", "drift", "drift_physics_only"],
            sample=mri_recon_samples(dataset),
        )
    for split in ("test", "ood"):
        out += expand(
            "results/recon/stem/{split}/{method}/{sample}.json",
            split=split, method=[*DART_METHODS, "drift", "drift_physics_only"], sample=stem_recon_samples(split),
        )
    return out


FIGURE_CASES = {
    # figure: (MRI dataset, its mask, 4D-STEM split)
    "figure3": ("brats", "gaussian_R4" if "gaussian_R4" in MASK_IDS else MASK_IDS[0], "test"),
    "figure4": ("roots", RECON["mri"]["ood_masks"][0], "ood"),
}
PRIOR_METHODS = ["drift_physics_only", "dart", "drift"]


def recon_figure_inputs(wildcards):
    dataset, mask, split = FIGURE_CASES[wildcards.figure]
    out = {}
    if dataset == "brats" or MRI_CFG["ood"]["enabled"]:
        sample = mri_recon_samples(dataset)[0]
        paths = [f"results/recon/mri/{dataset}/{mask}/{m}/{sample}" for m in RECON["mri"]["methods"] + PRIOR_METHODS]
        out.update(
            mri_volumes=rules.prepare_mri.output.test if dataset == "brats" else rules.prepare_roots.output.ood,
            mri_mask=f"results/data/mri/masks/{mask}.npy",
            mri_recons=[f"{p}.npy" for p in paths],
            mri_metrics=[f"{p}.json" for p in paths],
        )
    samples = stem_recon_samples(split)
    if samples:
        paths = [f"results/recon/stem/{split}/{m}/{samples[0]}" for m in RECON["stem"]["methods"] + PRIOR_METHODS]
        out.update(
            stem_sample=f"results/data/stem/{split}/{samples[0]}.npz",
            stem_recons=[f"{p}.npy" for p in paths],
            stem_metrics=[f"{p}.json" for p in paths],
        )
    return out
