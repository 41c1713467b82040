# Crystals and 4D-STEM: one abTEM simulation per planned (crystal, zone axis, offset) sample.
# Materials Project structures are downloaded on the submit host (a localrule).


rule fetch_materials_project:
    output:
        "results/data/stem/structures/{mp_id}.cif",
    log:
        "logs/data/fetch_{mp_id}.log",
    threads: 1
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/fetch_materials_project.py"


rule simulate_stem:
    input:
        stem_structure_input,
    output:
        "results/data/stem/{split}/{sample}.npz",
    log:
        "logs/data/simulate_stem/{split}/{sample}.log",
    benchmark:
        "benchmarks/data/simulate_stem/{split}/{sample}.tsv"
    params:
        row=lambda wc: STEM_SAMPLES[wc.sample],
        simulation=config["stem"]["simulation"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/simulate_stem.py"
