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


rule paper_tables:
    input:
        baseline_metrics(),
        prior_recon_metrics(),
    output:
        table1_csv=report("results/tables/table1.csv", caption="../report/tables.rst", category="Tables"),
        table1_md="results/tables/table1.md",
        table1_tex="results/tables/table1.tex",
        table2_csv=report("results/tables/table2.csv", caption="../report/tables.rst", category="Tables"),
        table2_md="results/tables/table2.md",
        table2_tex="results/tables/table2.tex",
    log:
        "results/logs/evaluate/paper_tables.log",
    benchmark:
        "results/benchmarks/evaluate/paper_tables.tsv"
    params:
        partitions=RECON["partitions"],
        n_candidates=RECON["drift"]["n_candidates"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/paper_tables.py"
