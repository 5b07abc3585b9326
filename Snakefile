# vtdl pipeline. Thin on purpose: configuration, validation, rule files, the default target.
# Every rule calls the `vtdl` CLI, so each stage also runs by hand.
configfile: "params.yaml"


# Snakemake's HTML report (`make report`): this description and the outputs marked report().
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/downstream.smk"
include: "workflow/rules/report.smk"


# The default target: the results tables and plots (and, through them, every job above).
rule all:
    input:
        rules.report.output,
    default_target: True
