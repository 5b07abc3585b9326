# Data stages: embedded data set generation, frame extraction (one job per class shard),
# canonical split lists. Input functions live in common.smk.


# A checkpoint: extraction jobs list the generated files of their own class only.
checkpoint synth:
    # Light: on a cluster it runs on the submitting node, not as a batch job.
    localrule: True
    input:
        code("vtdl.data.synth"),
    output:
        videos=directory("data/raw/{ds}/videos"),
        splits=directory("data/raw/{ds}/splits"),
    params:
        vtdl=VTDL,
        fmt=lambda w: DATASETS[w.ds]["format"],
        args=lambda w: " ".join(
            f"--{key.replace('_', '-')} {value}" for key, value in DATASETS[w.ds]["synth"].items()
        ),
    log:
        "logs/synth/{ds}.log",
    benchmark:
        "benchmarks/synth/{ds}.tsv"
    conda:
        ENV
    shell:
        "{params.vtdl} synth --format {params.fmt} --videos {output.videos} --splits {output.splits}"
        " {params.args} 2> {log}"


rule extract:
    input:
        videos=extract_input,
        code=code("vtdl.data.extract"),
    output:
        directory("data/frames/{ds}/{shard}"),
    params:
        vtdl=VTDL,
        fmt=lambda w: DATASETS[w.ds]["format"],
        videos=lambda w: videos_dir(w.ds),
        settings=config["extract"],
    log:
        "logs/extract/{ds}/{shard}.log",
    benchmark:
        "benchmarks/extract/{ds}/{shard}.tsv"
    conda:
        ENV
    shell:
        "{params.vtdl} extract --format {params.fmt} --videos {params.videos:q}"
        " --out data/frames/{wildcards.ds} --shard {wildcards.shard:q}"
        " --short-side {params.settings[short_side]} --codec {params.settings[codec]}"
        " --quality {params.settings[quality]} --on-error {params.settings[on_error]}"
        " 2> {log:q}"


rule splits:
    # Light: on a cluster it runs on the submitting node, not as a batch job.
    localrule: True
    input:
        frames=lambda w: expand("data/frames/{ds}/{shard}", ds=w.ds, shard=shards(w.ds)),
        splits=split_files,
        code=code("vtdl.data.splits"),
    output:
        directory("data/splits/{ds}"),
    params:
        vtdl=VTDL,
        fmt=lambda w: DATASETS[w.ds]["format"],
        splits=lambda w: splits_dir(w.ds),
        on_missing=config["splits"]["on_missing"],
    log:
        "logs/splits/{ds}.log",
    benchmark:
        "benchmarks/splits/{ds}.tsv"
    conda:
        ENV
    shell:
        "{params.vtdl} splits --format {params.fmt} --splits {params.splits:q}"
        " --frames data/frames/{wildcards.ds} --out {output:q} --on-missing {params.on_missing}"
        " 2> {log}"
