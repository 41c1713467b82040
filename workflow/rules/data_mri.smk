# MRI data: synthetic FLAIR subjects (or the user's BraTS/NIfTI folder), OOD root volumes,
# preprocessing to (S, H, W) slabs with a seeded split, and undersampling masks.


rule synthesize_flair:
    output:
        directory("results/data/mri/raw/synthetic"),
    log:
        "results/logs/data/synthesize_flair.log",
    benchmark:
        "results/benchmarks/data/synthesize_flair.tsv"
    params:
        n_subjects=MRI_CFG["n_subjects"],
        shape=MRI_CFG["volume_shape"],
        # FLAIR, plus the other contrasts the prior trains on (mri.train_contrasts)
        contrasts=MRI_CFG["train_contrasts"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/synthesize_flair.py"


rule prepare_mri:
    input:
        mri_raw_dir,
    output:
        train="results/data/mri/brats/train.npy",
        val="results/data/mri/brats/val.npy",
        test="results/data/mri/brats/test.npy",
        subjects="results/data/mri/brats/subjects.json",
    log:
        "results/logs/data/prepare_mri.log",
    benchmark:
        "results/benchmarks/data/prepare_mri.tsv"
    params:
        source=MRI_CFG["source"],
        n_slices=MRI_CFG["n_slices"],
        size=MRI_CFG["size"],
        margin=MRI_CFG["crop_margin"],
        split=MRI_CFG["split"],
        train_contrasts=MRI_CFG["train_contrasts"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/prepare_mri.py"


rule synthesize_roots:
    output:
        directory("results/data/mri/raw/roots"),
    log:
        "results/logs/data/synthesize_roots.log",
    benchmark:
        "results/benchmarks/data/synthesize_roots.tsv"
    params:
        n_volumes=MRI_CFG["ood"]["n_volumes"],
        parameter_set=MRI_CFG["ood"]["parameter_set"],
        shape=MRI_CFG["ood"]["shape"],
        noise_sigma=MRI_CFG["ood"]["noise_sigma"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/synthesize_roots.py"


rule prepare_roots:
    input:
        rules.synthesize_roots.output,
    output:
        ood="results/data/mri/roots/ood.npy",
        subjects="results/data/mri/roots/subjects.json",
    log:
        "results/logs/data/prepare_roots.log",
    benchmark:
        "results/benchmarks/data/prepare_roots.tsv"
    params:
        n_slices=MRI_CFG["n_slices"],
        size=MRI_CFG["size"],
        margin=MRI_CFG["crop_margin"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/prepare_roots.py"


rule make_mask:
    output:
        "results/data/mri/masks/{kind}_R{R}.npy",
    log:
        "results/logs/data/make_mask_{kind}_R{R}.log",
    benchmark:
        "results/benchmarks/data/make_mask_{kind}_R{R}.tsv"
    params:
        center_fraction=lambda wc: center_fraction(config, int(wc.R)),
        size=MRI_CFG["size"],
        n_slices=MRI_CFG["n_slices"],
        per_slice=MRI_CFG["masks"]["per_slice"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/make_mask.py"
