# Figures and tables.


rule plot_datasets:
    input:
        mri_train=rules.prepare_mri.output.train,
        mri_ood=mri_ood_outputs(),
        **stem_figure_samples(),
    output:
        report(
            "results/figures/datasets.png",
            caption="../report/datasets.rst",
            category="Data",
        ),
    log:
        "results/logs/report/plot_datasets.log",
    benchmark:
        "results/benchmarks/report/plot_datasets.tsv"
    params:
        dpi=config["figures"]["dpi"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/plot_datasets.py"
