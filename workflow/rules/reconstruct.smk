# Classical baselines: each writes a reconstruction and a one-row metrics table per sample;
# 4D-STEM runs one job per sample, MRI one per (dataset, mask, method). MRI regularisation
# weights, and the 4D-STEM baselines' step sizes, sparsity weight and iteration counts, are
# chosen first on the validation split.


rule tune_mri_baseline:
    input:
        val=rules.prepare_mri.output.val,
        mask="results/data/mri/masks/{mask}.npy",
    output:
        "results/recon/mri/tuning/{mask}/{method}.json",
    log:
        "results/logs/recon/tune_mri_baseline/{mask}/{method}.log",
    benchmark:
        "results/benchmarks/recon/tune_mri_baseline/{mask}/{method}.tsv"
    wildcard_constraints:
        method="cs_l1_wavelet|tv|projection",
    params:
        grid=lambda wc: config["recon"]["mri"]["grids"][wc.method],
        max_extend=config["recon"]["mri"]["max_extend"],
        max_iter=lambda wc: config["recon"]["mri"]["max_iter"][wc.method],
        n_val=config["recon"]["mri"]["n_val"],
        wavelet=config["recon"]["mri"]["cs_wavelet"],
        levels=config["recon"]["mri"]["cs_levels"],
        noise_std=config["recon"]["mri"]["noise_std"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/tune_mri_baseline.py"


# One job per (dataset, mask, method) reconstructs every sample of that dataset: a job per
# volume paid about 3 s of imports and Snakemake's scheduling for a few seconds of work (168 of
# the default run's 422 jobs). The rule is written once per dataset because the two datasets
# hold different numbers of volumes.
for _dataset in MRI_DATASETS:

    rule:
        name:
            f"reconstruct_baseline_mri_{_dataset}"
        input:
            volumes=mri_volumes_of(_dataset),
            mask="results/data/mri/masks/{mask}.npy",
            tuning=mri_tuning_of,
        output:
            recon=expand(f"results/recon/mri/{_dataset}/{{{{mask}}}}/{{{{method}}}}/{{sample}}.npy",
                         sample=mri_recon_samples(_dataset)),
            metrics=expand(f"results/recon/mri/{_dataset}/{{{{mask}}}}/{{{{method}}}}/{{sample}}.json",
                           sample=mri_recon_samples(_dataset)),
        log:
            f"results/logs/recon/mri/{_dataset}/{{mask}}/{{method}}.log",
        benchmark:
            f"results/benchmarks/recon/mri/{_dataset}/{{mask}}/{{method}}.tsv"
        wildcard_constraints:
            method="zero_filled|cs_l1_wavelet|tv|projection",
        params:
            dataset=_dataset,
            samples=mri_recon_samples(_dataset),
            max_iter=lambda wc: config["recon"]["mri"]["max_iter"].get(wc.method),
            wavelet=config["recon"]["mri"]["cs_wavelet"],
            levels=config["recon"]["mri"]["cs_levels"],
            noise_std=config["recon"]["mri"]["noise_std"],
            seed=config["seed"],
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10 + 5 * len(mri_recon_samples(_dataset)),  # minutes: 30 volumes of the paper size fit
        conda:
            "../../envs/physdiff.yaml"
        script:
            "../scripts/reconstruct_baseline_mri.py"


rule tune_stem_baseline:
    input:
        stem_tuning_samples,
    output:
        "results/recon/stem/tuning/{method}.json",
    log:
        "results/logs/recon/tune_stem_baseline/{method}.log",
    benchmark:
        "results/benchmarks/recon/tune_stem_baseline/{method}.tsv"
    wildcard_constraints:
        method="three_pie|torchslice|sparse_decomposition",
    params:
        settings=lambda wc: config["recon"]["stem"][wc.method],
        grid=lambda wc: config["recon"]["stem"]["tuning"]["grids"][wc.method],
        max_iter=lambda wc: config["recon"]["stem"]["tuning"]["max_iter"][wc.method],
        max_extend=config["recon"]["stem"]["tuning"]["max_extend"],
        refine=config["recon"]["stem"]["tuning"]["refine"],
        loss=config["recon"]["stem"]["loss"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/tune_stem_baseline.py"


rule reconstruct_baseline_stem:
    input:
        sample="results/data/stem/{split}/{sample}.npz",
        tuning=rules.tune_stem_baseline.output[0],
    output:
        recon="results/recon/stem/{split}/{method}/{sample}.npy",
        metrics="results/recon/stem/{split}/{method}/{sample}.json",
    log:
        "results/logs/recon/stem/{split}/{method}/{sample}.log",
    benchmark:
        "results/benchmarks/recon/stem/{split}/{method}/{sample}.tsv"
    wildcard_constraints:
        split="test|ood",
        method="three_pie|torchslice|sparse_decomposition",
    params:
        settings=lambda wc: config["recon"]["stem"][wc.method],
        loss=config["recon"]["stem"]["loss"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/reconstruct_baseline_stem.py"
