# The partitioned diffusion prior: one training job per (modality, G, partition g), each with its
# own GPU request, then unconditional sampling that stacks the G slabs back together.


rule prior_data_stem:
    input:
        train=stem_sample_outputs("train"),
        val=stem_sample_outputs("val"),
    output:
        volumes="results/prior/stem/train.npy",
        val="results/prior/stem/val.npy",
        # The PowerTransform (scale_V_A, gamma) between V·Å and the prior's [0, 1].
        scale="results/prior/stem/scale.json",
    log:
        "results/logs/prior/prior_data_stem.log",
    benchmark:
        "results/benchmarks/prior/prior_data_stem.tsv"
    params:
        transform=config["prior"]["stem_transform"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/prior_data_stem.py"


rule train_prior:
    input:
        data=prior_training_data,
        val=prior_validation_data,
    output:
        model="results/prior/{modality}/G{G}/g{g}/model.pt",
        loss_csv="results/prior/{modality}/G{G}/g{g}/loss.csv",
        loss_png=report(
            "results/prior/{modality}/G{G}/g{g}/loss.png",
            caption="../report/loss.rst",
            category="Prior",
            subcategory="{modality}",
        ),
    log:
        "results/logs/prior/train_prior/{modality}/G{G}/g{g}.log",
    benchmark:
        "results/benchmarks/prior/train_prior/{modality}/G{G}/g{g}.tsv"
    wildcard_constraints:
        modality="mri|stem",
        G=r"\d+",
        g=r"\d+",
    # The longest jobs of the DAG: start them as soon as their data exist.
    priority: 10
    # A killed or failed job (preempted, node lost, out of time) is started again, and resumes
    # from its last checkpoint (params.checkpoint) instead of from step 0.
    retries: 2
    params:
        # Written every few minutes outside the declared outputs; a rerun resumes from it.
        checkpoint="results/checkpoints/{modality}/G{G}/g{g}.pt",
        # prior.model, with circular padding where prior.periodic marks the modality (its training
        # then shifts slabs at random too)
        model=lambda wc: prior_model_config(config, wc.modality),
        train=config["prior"]["train"],
        augment=lambda wc: config["prior"]["augment"][wc.modality],
        # the blocks of the MRI training array; more than one trains a contrast-conditional model
        contrasts=lambda wc: config["mri"]["train_contrasts"] if wc.modality == "mri" else [],
        seed=config["seed"],
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=720,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/train_prior.py"


rule generate:
    input:
        partition_models,
    output:
        "results/generated/{modality}/G{G}.npy",
    log:
        "results/logs/generated/{modality}/G{G}.log",
    benchmark:
        "results/benchmarks/generated/{modality}/G{G}.tsv"
    wildcard_constraints:
        modality="mri|stem",
        G=r"\d+",
    params:
        shape=volume_shape,
        sampling=config["prior"]["sampling"],
        generate=config["prior"]["generate"],
        seed=config["seed"],
    threads: 2
    resources:
        gpu=lambda wc: int(wc.G),
        mem_mb=8000,
        runtime=240,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/generate.py"


# The same partition models sampled with plain stacked slabs, for Table 3's comparison of the
# paper's stacking with the seam-aware sampling (only needed when prior.sampling.seam is not none).
use rule generate as generate_plain with:
    output:
        "results/generated/{modality}/G{G}_seam-none.npy",
    log:
        "results/logs/generated/{modality}/G{G}_seam-none.log",
    benchmark:
        "results/benchmarks/generated/{modality}/G{G}_seam-none.tsv"
    params:
        shape=volume_shape,
        sampling={**config["prior"]["sampling"], "seam": "none"},
        generate=config["prior"]["generate"],
        seed=config["seed"],


rule plot_generated:
    input:
        real=prior_training_data,
        generated=lambda wc: expand(
            "results/generated/{modality}/G{G}.npy", modality=wc.modality, G=config["prior"]["partitions"][wc.modality]
        ),
    output:
        report("results/figures/generated_{modality}.png", caption="../report/generated.rst", category="Prior"),
    log:
        "results/logs/report/plot_generated_{modality}.log",
    benchmark:
        "results/benchmarks/report/plot_generated_{modality}.tsv"
    wildcard_constraints:
        modality="mri|stem",
    params:
        partitions=lambda wc: config["prior"]["partitions"][wc.modality],
        dpi=config["figures"]["dpi"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/plot_generated.py"
