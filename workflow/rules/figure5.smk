# Figure 5: inference time and SSIM against the number of reverse steps (vanilla prior, DART,
# DRIFT) for every trained MRI partition count G, and time and peak memory per device against G
# from the training and sampling rules' benchmark files and the training time each model file
# records over all its runs (and CUDA's allocator on a GPU).
# Include after reconstruct_prior.smk (it uses problem_params and the tuning outputs).

FIG5 = config["figures"]["figure5"]
FIG5_G = config["prior"]["partitions"]["mri"]
FIG5_MASK = FIG5["mask"] or RECON["dart"]["mri_tune_mask"]


rule figure5:
    input:
        volumes=rules.prepare_mri.output.test,
        mask=f"results/data/mri/masks/{FIG5_MASK}.npy",
        solver_tuning=f"results/recon/mri/tuning/{FIG5_MASK}/{RECON['drift']['mri_solver']}.json",
        dart_tuning=f"results/recon/mri/tuning/{FIG5_MASK}/dart.json",
        drift_tuning=f"results/recon/mri/tuning/{FIG5_MASK}/drift.json",
        # every partition model of every G, in (G, g) order
        models=[f"results/prior/mri/G{G}/g{g}/model.pt" for G in FIG5_G for g in range(G)],
        # the benchmark files of the jobs that trained those models and sampled with them
        train_benchmarks=[f"results/benchmarks/prior/train_prior/mri/G{G}/g{g}.tsv" for G in FIG5_G for g in range(G)],
        generate_benchmarks=expand("results/benchmarks/generated/mri/G{G}.tsv", G=FIG5_G),
    output:
        png=report("results/figures/figure5.png", caption="../report/figure5.rst", category="Performance"),
        csv=report("results/figures/figure5.csv", caption="../report/figure5_csv.rst", category="Performance"),
    log:
        "results/logs/report/figure5.log",
    benchmark:
        "results/benchmarks/report/figure5.tsv"
    params:
        partitions=FIG5_G,
        figure5=FIG5,
        mask=FIG5_MASK,
        problem=problem_params("mri"),
        sampling=config["prior"]["sampling"],
        generate=config["prior"]["generate"],
        train_batch=config["prior"]["train"]["batch_size"],
        seed=config["seed"],
        dpi=config["figures"]["dpi"],
    # one thread, as the reconstruct rules: timings stay comparable with theirs and steadier on a busy machine
    threads: 1
    resources:
        gpu=max(FIG5_G, default=1),
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/figure5.py"
