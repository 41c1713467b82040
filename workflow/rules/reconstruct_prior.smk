# DART and DRIFT: the prior-guided reconstructions. Their settings are chosen on the validation
# split (tune_dart, tune_drift), then one job per (dataset, sample, mask) reconstructs a test
# sample and writes the reconstruction, a metrics row in the baselines' format and a log.


rule drift_candidates:
    input:
        dart_models,
    output:
        "results/recon/{modality}/drift/candidates.npy",
    log:
        "results/logs/recon/drift_candidates/{modality}.log",
    benchmark:
        "results/benchmarks/recon/drift_candidates/{modality}.tsv"
    wildcard_constraints:
        modality="mri|stem",
    params:
        shape=volume_shape,
        sampling=config["prior"]["sampling"],
        generate=lambda wc: {"n_volumes": RECON["drift"]["n_candidates"][wc.modality], "batch_size": config["prior"]["generate"]["batch_size"]},
        seed=drift_pool_seed(config),
    # one thread: the small U-Net's per-slab ops are too short to gain from a second one
    threads: 1
    resources:
        gpu=lambda wc: DART_G[wc.modality],
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/generate.py"


rule tune_dart:
    input:
        unpack(validation_inputs),
        models=dart_models,
    output:
        "results/recon/{modality}/tuning/{mask}/dart.json",
    log:
        "results/logs/recon/tune_dart/{modality}/{mask}.log",
    benchmark:
        "results/benchmarks/recon/tune_dart/{modality}/{mask}.tsv"
    wildcard_constraints:
        modality="mri|stem",
        mask=TUNING_MASKS,
    params:
        modality=lambda wc: wc.modality,
        problem=lambda wc: problem_params(wc.modality),
        n_val=lambda wc: RECON["n_val"][wc.modality],
        base=DART_BASE,
        grid=lambda wc: RECON["dart"]["grid"][wc.modality],
        seed=config["seed"],
    # one thread: the small U-Net's per-slab ops are too short to gain from a second one
    threads: 1
    resources:
        gpu=lambda wc: DART_G[wc.modality],
        mem_mb=8000,
        runtime=240,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/tune_dart.py"


rule tune_drift:
    input:
        unpack(validation_inputs),
        candidates=rules.drift_candidates.output[0],
    output:
        "results/recon/{modality}/tuning/{mask}/drift.json",
    log:
        "results/logs/recon/tune_drift/{modality}/{mask}.log",
    benchmark:
        "results/benchmarks/recon/tune_drift/{modality}/{mask}.tsv"
    wildcard_constraints:
        modality="mri|stem",
        mask=TUNING_MASKS,
    params:
        modality=lambda wc: wc.modality,
        problem=lambda wc: problem_params(wc.modality),
        n_val=lambda wc: RECON["n_val"][wc.modality],
        n_candidates=lambda wc: RECON["drift"]["n_candidates"][wc.modality],
        grid=lambda wc: RECON["drift"]["n_iter_grid"][wc.modality],
        refine_top=lambda wc: RECON["drift"]["refine_top"][wc.modality],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/tune_drift.py"


rule reconstruct_dart_mri:
    input:
        unpack(mri_test_inputs),
        models=expand("results/prior/mri/G{G}/g{g}/model.pt", G=DART_G["mri"], g=range(DART_G["mri"])),
        # roots take the settings chosen for the same mask in distribution: OOD scans are never tuned on
        tuning="results/recon/mri/tuning/{mask}/dart.json",
    output:
        recon="results/recon/mri/{dataset}/{mask}/{method}/{sample}.npy",
        metrics="results/recon/mri/{dataset}/{mask}/{method}/{sample}.json",
        steps="results/recon/mri/{dataset}/{mask}/{method}/{sample}_steps.csv",
        # the reconstruction from the lines less the held-out ones (the self-validated choice's check)
        kept="results/recon/mri/{dataset}/{mask}/{method}/{sample}_kept.npy",
    log:
        "results/logs/recon/mri/{dataset}/{mask}/{method}/{sample}.log",
    benchmark:
        "results/benchmarks/recon/mri/{dataset}/{mask}/{method}/{sample}.tsv"
    wildcard_constraints:
        dataset="brats|roots",
        method="dart|dart_adapt",
        sample=r"\d+",
    params:
        modality="mri",
        problem=problem_params("mri"),
        # method dart_adapt: the prior adapted to each scan (physdiff.recon.adapt); None for plain DART
        adapt=lambda wc: DART_ADAPT if wc.method == "dart_adapt" else None,
        heldout=DART_ADAPT["holdout"],
        seed=config["seed"],
    threads: 1
    resources:
        gpu=DART_G["mri"],
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/reconstruct_dart.py"


rule reconstruct_selfval_mri:
    input:
        unpack(mri_test_inputs),
        cs_tuning="results/recon/mri/tuning/{mask}/cs_l1_wavelet.json",
        recons=expand("results/recon/mri/{{dataset}}/{{mask}}/{method}/{{sample}}.npy", method=SELFVAL_FROM),
        metrics=expand("results/recon/mri/{{dataset}}/{{mask}}/{method}/{{sample}}.json", method=SELFVAL_FROM),
        kept=expand("results/recon/mri/{{dataset}}/{{mask}}/{method}/{{sample}}_kept.npy",
                    method=[m for m in SELFVAL_FROM if m.startswith("dart")]),
    output:
        recon="results/recon/mri/{dataset}/{mask}/dart_selfval/{sample}.npy",
        metrics="results/recon/mri/{dataset}/{mask}/dart_selfval/{sample}.json",
    log:
        "results/logs/recon/mri/{dataset}/{mask}/dart_selfval/{sample}.log",
    benchmark:
        "results/benchmarks/recon/mri/{dataset}/{mask}/dart_selfval/{sample}.tsv"
    wildcard_constraints:
        dataset="brats|roots",
        sample=r"\d+",
    params:
        methods=SELFVAL_FROM,
        problem=problem_params("mri"),
        heldout=DART_ADAPT["holdout"],
        weighting=RECON["dart"]["selfval_weighting"],
        max_iter=RECON["mri"]["max_iter"]["cs_l1_wavelet"],
        wavelet=RECON["mri"]["cs_wavelet"],
        levels=RECON["mri"]["cs_levels"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/select_mri.py"


rule reconstruct_dart_stem:
    input:
        unpack(stem_test_inputs),
        models=expand("results/prior/stem/G{G}/g{g}/model.pt", G=DART_G["stem"], g=range(DART_G["stem"])),
        tuning="results/recon/stem/tuning/full/dart.json",
    output:
        recon="results/recon/stem/{split}/{method}/{sample}.npy",
        metrics="results/recon/stem/{split}/{method}/{sample}.json",
        steps="results/recon/stem/{split}/{method}/{sample}_steps.csv",
    log:
        "results/logs/recon/stem/{split}/{method}/{sample}.log",
    benchmark:
        "results/benchmarks/recon/stem/{split}/{method}/{sample}.tsv"
    wildcard_constraints:
        split="test|ood",
        method="dart|dart_adapt",
    params:
        modality="stem",
        problem=problem_params("stem"),
        # method dart_adapt: the prior adapted to each sample, held-out scan positions choosing the stop
        adapt=lambda wc: DART_ADAPT if wc.method == "dart_adapt" else None,
        seed=config["seed"],
    threads: 1
    resources:
        gpu=DART_G["stem"],
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/reconstruct_dart.py"


rule reconstruct_drift_mri:
    input:
        unpack(mri_test_inputs),
        candidates="results/recon/mri/drift/candidates.npy",
        tuning="results/recon/mri/tuning/{mask}/drift.json",
    output:
        drift_recon="results/recon/mri/{dataset}/{mask}/drift/{sample}.npy",
        drift_metrics="results/recon/mri/{dataset}/{mask}/drift/{sample}.json",
        drift_physics_only_recon="results/recon/mri/{dataset}/{mask}/drift_physics_only/{sample}.npy",
        drift_physics_only_metrics="results/recon/mri/{dataset}/{mask}/drift_physics_only/{sample}.json",
        scores="results/recon/mri/{dataset}/{mask}/drift/{sample}_scores.csv",
    log:
        "results/logs/recon/mri/{dataset}/{mask}/drift/{sample}.log",
    benchmark:
        "results/benchmarks/recon/mri/{dataset}/{mask}/drift/{sample}.tsv"
    wildcard_constraints:
        dataset="brats|roots",
        sample=r"\d+",
    params:
        modality="mri",
        problem=problem_params("mri"),
        n_candidates=RECON["drift"]["n_candidates"]["mri"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/reconstruct_drift.py"


rule reconstruct_drift_stem:
    input:
        unpack(stem_test_inputs),
        candidates="results/recon/stem/drift/candidates.npy",
        tuning="results/recon/stem/tuning/full/drift.json",
    output:
        drift_recon="results/recon/stem/{split}/drift/{sample}.npy",
        drift_metrics="results/recon/stem/{split}/drift/{sample}.json",
        drift_physics_only_recon="results/recon/stem/{split}/drift_physics_only/{sample}.npy",
        drift_physics_only_metrics="results/recon/stem/{split}/drift_physics_only/{sample}.json",
        scores="results/recon/stem/{split}/drift/{sample}_scores.csv",
    log:
        "results/logs/recon/stem/{split}/drift/{sample}.log",
    benchmark:
        "results/benchmarks/recon/stem/{split}/drift/{sample}.tsv"
    wildcard_constraints:
        split="test|ood",
    params:
        modality="stem",
        problem=problem_params("stem"),
        n_candidates=RECON["drift"]["n_candidates"]["stem"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/reconstruct_drift.py"


rule plot_recon:
    input:
        unpack(recon_figure_inputs),
    output:
        report("results/figures/{figure}.png", caption="../report/recon.rst", category="Reconstructions"),
    log:
        "results/logs/report/plot_recon_{figure}.log",
    benchmark:
        "results/benchmarks/report/plot_recon_{figure}.tsv"
    wildcard_constraints:
        figure="figure3|figure4",
    params:
        title=lambda wc: "Figure 3: in distribution" if wc.figure == "figure3" else "Figure 4: out of distribution",
        mri_dataset=lambda wc: FIGURE_CASES[wc.figure][0],
        mri_mask=lambda wc: FIGURE_CASES[wc.figure][1],
        mri_sample=lambda wc: mri_recon_samples(FIGURE_CASES[wc.figure][0])[0],
        noise_std=RECON["mri"]["noise_std"],
        seed=config["seed"],
        dpi=config["figures"]["dpi"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/plot_recon.py"

