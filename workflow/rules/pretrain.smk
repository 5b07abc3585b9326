# Pretraining: one job per method x backbone x seed on the training list of
# pretrain.dataset / split pretrain.split (labels are used only by the `supervised` reference).


rule pretrain:
    input:
        lists="data/splits/{ds}",
        frames=lambda w: expand("data/frames/{ds}/{shard}", ds=w.ds, shard=shards(w.ds)),
        code=code("vtdl.pretrain"),
    output:
        encoder=names.ENCODER,
        summary=names.PRETRAIN_SUMMARY,
    params:
        vtdl=VTDL,
        # Only what the job trains with (PretrainSettings.for_job): a seed, method or
        # backbone added to the grid leaves the finished jobs' params as they were.
        settings=lambda w: json.dumps(PRETRAIN_SETTINGS.for_job(w.backbone).as_dict()),
        out=subpath(output.encoder, parent=True),
    wildcard_constraints:
        method=names.regex(names.PRETRAINED_METHODS),
    # One CPU thread per job lets two jobs share a 2-core machine; on a GPU machine raise it
    # with `--set-threads pretrain=8` (or in a profile). Snakemake counts `gpu` only when the
    # run declares it (`--resources gpu=1`).
    threads: 1
    resources:
        gpu=1,
    conda:
        ENV
    log:
        names.job_file("logs", "pretrain", "log", per_split=False),
    benchmark:
        names.job_file("benchmarks", "pretrain", "tsv", per_split=False)
    shell:
        "{params.vtdl} pretrain --method {wildcards.method} --backbone {wildcards.backbone}"
        " --seed {wildcards.seed} --dataset {wildcards.ds} --lists {input.lists:q}"
        " --frames data/frames/{wildcards.ds} --out {params.out:q}"
        " --settings {params.settings:q} --threads {threads} --gpus {resources.gpu}"
        " > {log:q} 2>&1"
