# Physics-guided partitioned diffusion priors for multi-slice reconstruction.
#
#   snakemake --cores 2                         # embedded default (offline, CPU)
#   snakemake --profile profiles/slurm --configfile config/paper.yaml   # the paper's scale
#
# The configuration is validated against workflow/schemas/config.schema.yaml before the DAG is
# built; see config/README.md for every key.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data_mri.smk"
include: "workflow/rules/data_stem.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/reconstruct_prior.smk"
include: "workflow/rules/figure5.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.prepare_mri.output,
        mri_ood_outputs(),
        mri_mask_outputs(),
        stem_sample_outputs(),
        rules.plot_datasets.output,
        rules.baseline_table.output,
        prior_outputs(),
        rules.paper_tables.output,
        expand("results/figures/{figure}.png", figure=["figure3", "figure4"]),
        rules.table3.output,
        rules.figure5.output,
    default_target: True
