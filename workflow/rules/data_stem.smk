# Crystals and 4D-STEM: abTEM simulations of every planned (crystal, zone axis, offset) sample.
# One job per crystal simulates all of its axes and offsets, so the import and FFT planning
# cost is paid once per crystal. Materials Project structures are downloaded on the submit host.


rule simulate_crystal:
    output:
        expand(
            "results/data/stem/{{split}}/{{crystal}}_{axis}_{k}.npz",
            axis=config["stem"]["zone_axes"],
            k=range(config["stem"]["offsets_per_axis"]),
        ),
    log:
        "results/logs/data/simulate_stem/{split}/{crystal}.log",
    benchmark:
        "results/benchmarks/data/simulate_stem/{split}/{crystal}.tsv"
    wildcard_constraints:
        split="train|val|test",
    params:
        rows=lambda wc: stem_rows(wc.crystal, wc.split),
        simulation=config["stem"]["simulation"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/simulate_stem.py"


rule simulate_ood_crystal:
    output:
        expand("results/data/stem/ood/{{crystal}}_{axis}_0.npz", axis=config["stem"]["ood_zone_axes"]),
    log:
        "results/logs/data/simulate_stem/ood/{crystal}.log",
    benchmark:
        "results/benchmarks/data/simulate_stem/ood/{crystal}.tsv"
    params:
        rows=lambda wc: stem_rows(wc.crystal, "ood"),
        simulation=config["stem"]["simulation"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/simulate_stem.py"


rule fetch_materials_project:
    output:
        "results/data/stem/structures/{mp_id}.cif",
    log:
        "results/logs/data/fetch_{mp_id}.log",
    benchmark:
        "results/benchmarks/data/fetch_{mp_id}.tsv"
    wildcard_constraints:
        mp_id=r"mp-\d+",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/fetch_materials_project.py"


rule simulate_user_structure:
    input:
        stem_structure_input,
    output:
        "results/data/stem/test/{user_sample}.npz",
    log:
        "results/logs/data/simulate_stem/test/{user_sample}.log",
    benchmark:
        "results/benchmarks/data/simulate_stem/test/{user_sample}.tsv"
    wildcard_constraints:
        user_sample=r"(user|mp)-[A-Za-z0-9\-]+",
    params:
        rows=lambda wc: [STEM_SAMPLES[wc.user_sample]],
        simulation=config["stem"]["simulation"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/simulate_stem.py"
