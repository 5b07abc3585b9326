# vtdl pipeline. Thin on purpose: configuration, validation, rule files, the default target.
# Every rule calls the `vtdl` CLI, so each stage also runs by hand.
configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"


rule all:
    input:
        expand("data/splits/{ds}", ds=DATASETS),
        pretrain_targets(),
    default_target: True
