# Report: every table and plot rebuilt from the MLflow store alone, once every downstream job
# has finished. The store itself (mlflow.db) is not an input: every job writes to it, so the
# downstream result files stand for "the runs the report needs are there".
# The CSV tables and the figures are marked for Snakemake's HTML report (`make report`), with
# the captions in workflow/report/.


rule report:
    # Light: on a cluster it runs on the submitting node, not as a batch job.
    localrule: True
    input:
        # A function, so this file does not depend on the include order of downstream.smk.
        results=lambda wildcards: downstream_targets(),
        code=code("vtdl.report"),
    output:
        tables=[report_table(name, ext) for name in REPORT_TABLES for ext in ("md", "csv", "tex")],
        differences=report(
            "results/tables/differences.csv",
            caption="../report/differences.rst",
            category="Tables",
            subcategory="differences",
        ),
        plots=report(
            directory("results/plots"),
            patterns=["{figure}.png"],
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    params:
        vtdl=VTDL,
        # The configured multi-clip test, so older runs with another N are not reported.
        clips=(
            f"--clips {config['downstream']['test_clips']}"
            if "test_clips" in config.get("downstream", {})
            else ""
        ),
        # The configured seeds: runs of seeds dropped from the grid are left out of the means.
        seeds="--seeds " + " ".join(str(s) for s in PRETRAIN["seeds"]),
    conda:
        ENV
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    shell:
        "{params.vtdl} report --out results {params.clips} {params.seeds} > {log:q} 2>&1"
