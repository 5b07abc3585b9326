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
DOWNSTREAM_CODE = [
    "downstream/__init__.py",
    "downstream/common.py",
    "downstream/job.py",
    "metrics.py",
    "augment.py",
    "runtime.py",
    "checkpoint.py",
    "tracking.py",
    "config.py",
    "progress.py",
    "data/clips.py",
    "data/framestore.py",
    *(f"models/{p.name}" for p in sorted((SRC / "models").glob("*.py"))),
]


rule finetune:
    input:
        encoder=lambda w: downstream_grid.encoder_path(config, w.method, w.backbone, w.seed) or [],
        lists="data/splits/{ds}",
        frames=lambda w: expand("data/frames/{ds}/{shard}", ds=w.ds, shard=shards(w.ds)),
        code=code("downstream/finetune.py", *DOWNSTREAM_CODE),
    output:
        "results/finetune/{ds}/split{split}/{method}_{backbone}_s{seed}.json",
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
        "logs/finetune/{ds}/split{split}/{method}_{backbone}_s{seed}.log",
    benchmark:
        "benchmarks/finetune/{ds}/split{split}/{method}_{backbone}_s{seed}.tsv"
    shell:
        "{params.vtdl} finetune {params.args} --format {params.fmt}"
        " --settings {params.settings:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


rule features:
    input:
        encoder=lambda w: downstream_grid.encoder_path(config, w.method, w.backbone, w.seed) or [],
        lists="data/splits/{ds}",
        frames=lambda w: expand("data/frames/{ds}/{shard}", ds=w.ds, shard=shards(w.ds)),
        code=code("downstream/features.py", "downstream/cached.py", *DOWNSTREAM_CODE),
    output:
        downstream_grid.FEATURES,
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
        "logs/features/{ds}/split{split}/{method}_{backbone}_s{seed}.log",
    benchmark:
        "benchmarks/features/{ds}/split{split}/{method}_{backbone}_s{seed}.tsv"
    shell:
        "{params.vtdl} features {params.args}"
        " --settings {params.settings:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


# What the jobs that read cached features run (no torch, no model code).
CACHED_CODE = [
    "downstream/__init__.py",
    "downstream/cached.py",
    "downstream/job.py",
    "metrics.py",
    "tracking.py",
    "config.py",
]


rule linear:
    input:
        features=downstream_grid.FEATURES,
        code=code("downstream/linear.py", *CACHED_CODE),
    output:
        "results/linear/{ds}/split{split}/{method}_{backbone}_s{seed}.json",
    params:
        vtdl=VTDL,
        settings=downstream_grid.settings_json(config, "linear"),
    wildcard_constraints:
        split=r"\d+",
    conda:
        ENV
    log:
        "logs/linear/{ds}/split{split}/{method}_{backbone}_s{seed}.log",
    benchmark:
        "benchmarks/linear/{ds}/split{split}/{method}_{backbone}_s{seed}.tsv"
    shell:
        "{params.vtdl} linear --features {input.features:q}"
        " --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"


rule retrieval:
    input:
        features=downstream_grid.FEATURES,
        code=code("downstream/retrieval.py", *CACHED_CODE),
    output:
        "results/retrieval/{ds}/split{split}/{method}_{backbone}_s{seed}.json",
    params:
        vtdl=VTDL,
        settings=downstream_grid.settings_json(config, "retrieval"),
    wildcard_constraints:
        split=r"\d+",
    conda:
        ENV
    log:
        "logs/retrieval/{ds}/split{split}/{method}_{backbone}_s{seed}.log",
    benchmark:
        "benchmarks/retrieval/{ds}/split{split}/{method}_{backbone}_s{seed}.tsv"
    shell:
        "{params.vtdl} retrieval --features {input.features:q}"
        " --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"
