# Shared helpers: validated config, data set paths, shard lists, the vtdl executable.
import json
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

from vtdl.config import load_yaml, validate_params
from vtdl.data.sizes import check_data_params
from vtdl.errors import VtdlError
from vtdl.settings import PretrainSettings
from vtdl import names
from vtdl.codeinputs import stage_files, use_cache_file


def in_order_of(config, reference):
    """`config` with the keys of every mapping in `reference`'s order (the keys `reference`
    lacks after them, in their own order); values are not touched."""
    if not isinstance(config, dict):
        return config
    order = reference if isinstance(reference, dict) else {}
    keys = [k for k in order if k in config] + [k for k in config if k not in order]
    return {k: in_order_of(config[k], order.get(k)) for k in keys}


# Every section in params.yaml's key order. Snakemake merges the keys of --configfile overlays
# ahead of params.yaml's and compares rule parameters as text, so restating a value in an
# overlay, or a preset setting one key of a section, would otherwise reorder that section and
# re-run every job that gets it. (Here, not in vtdl.config: that module is a code input of
# every training stage, and an edit to it re-runs them all.)
if Path("params.yaml").is_file():
    _ordered = in_order_of(config, load_yaml("params.yaml"))
    config.clear()
    config.update(_ordered)

try:
    # Before any job runs: a wrong key, type or range stops here with the key named.
    validate_params(config, source="params")
except VtdlError as err:
    raise WorkflowError(str(err)) from None

DATASETS = config["datasets"]
SYNTH_DATASETS = [name for name, ds in DATASETS.items() if "synth" in ds]

# A downloaded data set's folders must exist before any job runs. Checked later, inside an input
# function, the error would be swallowed whenever the tables are already on disk (Snakemake
# then keeps them and quietly plans nothing for the new data set).
for _name in DATASETS:
    for _key in ("videos", "splits"):
        if _name not in SYNTH_DATASETS and not Path(DATASETS[_name][_key]).is_dir():
            raise WorkflowError(
                f"params: datasets.{_name}.{_key}: directory not found: {DATASETS[_name][_key]}"
            )


def shard_problem(fmt, shard):
    """Why a class folder cannot go through the workflow (None when it can).

    Every other character is safe: shell commands quote each name (`{wildcards.shard:q}`)
    and lists are written and read as CSV.
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in shard):
        return "holds a control character (a newline?), which Snakemake's file patterns do not match"
    if "{" in shard or "}" in shard:
        return "holds a brace, which Snakemake reads as a wildcard in a file name"
    if fmt == "ucf101" and any(c.isspace() for c in shard):
        return "holds whitespace, which UCF101's split files (space-separated fields) cannot name"
    return None


# Class folder names that cannot work stop the run here, naming the folder, not in a job.
for _name in DATASETS:
    if _name not in SYNTH_DATASETS:
        from vtdl.data.extract import list_shards

        for _shard in list_shards(DATASETS[_name]["format"], DATASETS[_name]["videos"]):
            _problem = shard_problem(DATASETS[_name]["format"], _shard)
            if _problem:
                raise WorkflowError(
                    f"params: datasets.{_name}.videos: class folder {_shard!r} {_problem}; "
                    "rename it (and its name in the split files)"
                )

try:
    # Values the data rules out (a queue or batch the training set cannot fill, a clip longer
    # than every video), from what is known of the data sets before any job runs.
    check_data_params(config, source="params")
except VtdlError as err:
    raise WorkflowError(str(err)) from None

# The vtdl next to the Python that runs Snakemake: works without an activated venv. With
# --software-deployment-method conda each job runs in workflow/envs/vtdl.yaml's environment,
# whose own `vtdl` is first on PATH.
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    VTDL = "vtdl"
else:
    VTDL = shlex.quote(str(Path(sys.executable).with_name("vtdl")))
# The software environment of every rule (Snakemake resolves it relative to the rule file).
ENV = "../envs/vtdl.yaml"
# Package sources are inputs of the rules that run them (see `code`), so a code change re-runs
# the stage.
# Relative to the working directory when the workflow runs in its own checkout (the usual case).
_src = Path(workflow.basedir, "src", "vtdl").resolve()
SRC = _src.relative_to(Path.cwd()) if _src.is_relative_to(Path.cwd()) else _src
# What each module imports, kept between runs: only edited files are parsed again.
use_cache_file(Path(".snakemake", "vtdl", "code-imports.json"))


wildcard_constraints:
    ds="|".join(DATASETS),


def code(module):
    """The package files the stage `module` runs (it and its `vtdl` imports, computed by
    vtdl.codeinputs): editing any of them re-runs the rule's jobs, and only those."""
    return [str(SRC / path) for path in stage_files(module)]


def is_synth(ds):
    return ds in SYNTH_DATASETS


def videos_dir(ds):
    return f"data/raw/{ds}/videos" if is_synth(ds) else DATASETS[ds]["videos"]


def splits_dir(ds):
    return f"data/raw/{ds}/splits" if is_synth(ds) else DATASETS[ds]["splits"]


def _existing_dir(ds, key):
    path = Path(DATASETS[ds][key])
    if not path.is_dir():
        raise WorkflowError(f"params: datasets.{ds}.{key}: directory not found: {path}")
    return path


def shards(ds):
    """Extraction shards (one job each): class folders (Kinetics: split/class folders)."""
    fmt = DATASETS[ds]["format"]
    if is_synth(ds):
        from vtdl.data.synth import class_names

        return class_names(fmt)[: DATASETS[ds]["synth"]["num_classes"]]
    from vtdl.data.extract import list_shards

    shard_list = list_shards(fmt, _existing_dir(ds, "videos"))
    if not shard_list:
        raise WorkflowError(f"params: datasets.{ds}.videos: no class folders with videos found")
    return shard_list


def files_under(path):
    """Every non-hidden file below `path`, so adding or changing one re-runs its job."""
    return sorted(
        str(p)
        for p in Path(path).rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def extract_input(wildcards):
    """The files of one shard, so changing one class's videos re-extracts only that class.

    A generated set is the output folder of the `synth` checkpoint: its shard files are known
    (and listed) once it has run, or at once when it is up to date. Depending on the whole
    folder instead would re-extract every class when any one video changes.
    """
    if is_synth(wildcards.ds):
        videos = checkpoints.synth.get(ds=wildcards.ds).output.videos
        return files_under(Path(videos) / wildcards.shard)
    return files_under(_existing_dir(wildcards.ds, "videos") / wildcards.shard)


def split_files(wildcards):
    """The official split files of a data set (every file, so an edit re-runs `splits`)."""
    if is_synth(wildcards.ds):
        return [splits_dir(wildcards.ds)]
    return files_under(_existing_dir(wildcards.ds, "splits"))


# ---- pretraining grid (used by pretrain.smk, downstream.smk and the Snakefile)
PRETRAIN = config["pretrain"]
PRETRAIN_DS = PRETRAIN["dataset"]
PRETRAIN_SETTINGS = PretrainSettings.from_section(PRETRAIN)
# Rows of the ablation that have an encoder to train; `scratch` has none.
PRETRAIN_METHODS = [*PRETRAIN["methods"], names.SUPERVISED]


# Regexes, so `{method}_{backbone}_s{seed}` splits unambiguously although names contain `_`.
wildcard_constraints:
    method=names.regex(names.METHODS),
    backbone=names.regex(names.BACKBONES),
    seed=r"\d+",


def pretrain_targets():
    return expand(
        names.PRETRAIN_SUMMARY,
        ds=PRETRAIN_DS,
        method=PRETRAIN_METHODS,
        backbone=PRETRAIN["backbones"],
        seed=PRETRAIN["seeds"],
    )


# ---- report (used by report.smk)
REPORT_TABLES = ["ablation", "all_metrics", "pretext"]


def report_table(name, ext):
    """A table file; the CSV one marked for the HTML report, captioned by workflow/report/."""
    path = f"results/tables/{name}.{ext}"
    if ext != "csv":
        return path
    return report(path, caption=f"../report/{name}.rst", category="Tables", subcategory=name)
