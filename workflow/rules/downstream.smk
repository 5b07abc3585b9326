# Downstream evaluation: fine-tuning, linear probe and retrieval of every encoder of the
# pretrain grid plus the `scratch` baseline, on every downstream data set x split x seed.
# Output results/<protocol>/<ds>/split<k>/<method>_<backbone>_s<seed>.json (metrics + run id).
# The frozen-feature protocols share one cached `features` job per encoder x data set x split
# (results/features/..., the test videos are encoded once); they read only that file.
# The grid logic (targets, per-protocol settings, options) is vtdl.downstream.grid; each rule
# gets only the settings its protocol uses, so editing one protocol's section re-runs only it.
from vtdl.downstream import grid as downstream_grid

try:
    downstream_grid.check(config)
except VtdlError as err:
    raise WorkflowError(str(err)) from None

# Every result JSON of the grid (the report's input); a callable, as report.smk expects.
downstream_targets = lambda: downstream_grid.targets(config)


rule finetune:
    input:
        encoder=lambda w: downstream_grid.encoder_path(config, w.method, w.backbone, w.seed) or [],
        lists="data/splits/{ds}",
        frames=lambda w: expand("data/frames/{ds}/{shard}", ds=w.ds, shard=shards(w.ds)),
        code=code("vtdl.downstream.finetune"),
    output:
        names.job_file("results", "finetune", "json"),
    params:
        vtdl=VTDL,
        args=lambda w: downstream_grid.command_options(config, w),
        settings=downstream_grid.settings_json(config, "finetune"),
        fmt=lambda w: DATASETS[w.ds]["format"],
    wildcard_constraints:
        split=r"\d+",
    # One CPU thread per job: two jobs share a 2-core machine better than one job uses both.
    threads: 1
    resources:
        gpu=1,
    conda:
        ENV
    log:
        names.job_file("logs", "finetune", "log"),
    benchmark:
        names.job_file("benchmarks", "finetune", "tsv")
    shell:
        "{params.vtdl} finetune {params.args} --format {params.fmt}"
        " --settings {params.settings:q} --out {output:q} --threads {threads}"
        " --gpus {resources.gpu} > {log:q} 2>&1"


rule features:
    input:
        encoder=lambda w: downstream_grid.encoder_path(config, w.method, w.backbone, w.seed) or [],
        lists="data/splits/{ds}",
        frames=lambda w: expand("data/frames/{ds}/{shard}", ds=w.ds, shard=shards(w.ds)),
        code=code("vtdl.downstream.features"),
    output:
        names.FEATURES_FILE,
    params:
        vtdl=VTDL,
        args=lambda w: downstream_grid.command_options(config, w),
        settings=downstream_grid.settings_json(config, "features"),
    wildcard_constraints:
        split=r"\d+",
    threads: 1
    resources:
        gpu=1,
    conda:
        ENV
    log:
        names.job_file("logs", "features", "log"),
    benchmark:
        names.job_file("benchmarks", "features", "tsv")
    shell:
        "{params.vtdl} features {params.args}"
        " --settings {params.settings:q} --out {output:q} --threads {threads}"
        " --gpus {resources.gpu} > {log:q} 2>&1"


rule linear:
    # Light: on a cluster it runs on the submitting node, not as a batch job.
    localrule: True
    input:
        features=names.FEATURES_FILE,
        code=code("vtdl.downstream.linear"),
    output:
        names.job_file("results", "linear", "json"),
    params:
        vtdl=VTDL,
        settings=downstream_grid.settings_json(config, "linear"),
    wildcard_constraints:
        split=r"\d+",
    conda:
        ENV
    log:
        names.job_file("logs", "linear", "log"),
    benchmark:
        names.job_file("benchmarks", "linear", "tsv")
    shell:
        "{params.vtdl} linear --features {input.features:q}"
        " --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"


rule retrieval:
    # Light: on a cluster it runs on the submitting node, not as a batch job.
    localrule: True
    input:
        features=names.FEATURES_FILE,
        code=code("vtdl.downstream.retrieval"),
    output:
        names.job_file("results", "retrieval", "json"),
    params:
        vtdl=VTDL,
        settings=downstream_grid.settings_json(config, "retrieval"),
    wildcard_constraints:
        split=r"\d+",
    conda:
        ENV
    log:
        names.job_file("logs", "retrieval", "log"),
    benchmark:
        names.job_file("benchmarks", "retrieval", "tsv")
    shell:
        "{params.vtdl} retrieval --features {input.features:q}"
        " --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"
