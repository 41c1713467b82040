# Tables: gather the per-sample metrics rows into tidy CSVs and Markdown summaries.


rule baseline_table:
    input:
        baseline_metrics(),
    output:
        csv=report("results/tables/baselines.csv", caption="../report/baselines.rst", category="Tables"),
        md="results/tables/baselines.md",
    log:
        "results/logs/evaluate/baseline_table.log",
    benchmark:
        "results/benchmarks/evaluate/baseline_table.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/baseline_table.py"
