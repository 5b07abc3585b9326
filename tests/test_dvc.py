"""DVC versioning: dvc.yaml matches the Snakemake workflow; a colleague's clone rebuilds nothing.

The drift tests load this checkout's Snakefile (Snakemake's API, in a subprocess) and fail when a
rule's outputs, a rule file or a params.yaml section is not covered by a dvc.yaml stage. The
collaborator test makes a tiny git project from this checkout: clone A runs the pipeline through
DVC and pushes to a local remote, a fresh clone B pulls, Snakemake then runs no job, and B's
report rebuilt from the pulled MLflow store equals A's tables.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_project import BIN, clone, digests, make, out, run

from vtdl import dvcsync, tracking
from vtdl.config import load_yaml

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = load_yaml(ROOT / "dvc.yaml")
STAGES = DVC_YAML["stages"]

_RULES_SCRIPT = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings, OutputSettings, ResourceSettings, StorageSettings)
root = Path(sys.argv[1])
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(configfiles=[root / "params.yaml"]),
        storage_settings=StorageSettings(), snakefile=root / "Snakefile", workdir=root)
    print("RULES=" + json.dumps({
        r.name: {"outputs": [str(o) for o in r.output],
                 "snakefile": str(Path(r.snakefile).resolve().relative_to(root)),
                 "code": [str(Path(i).resolve().relative_to(root)) for i in r.input
                          if isinstance(i, str) and "src/vtdl/" in i]}
        for r in wf._workflow.rules}))
"""


@pytest.fixture(scope="module")
def rules() -> dict[str, dict]:
    """Every rule of this checkout's workflow: its output patterns and the file defining it."""
    result = subprocess.run(
        [sys.executable, "-c", _RULES_SCRIPT, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("RULES=")), None)
    assert line, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(line.removeprefix("RULES="))


def _static_prefix(pattern: str) -> str:
    """The part of an output pattern before its first wildcard."""
    return pattern.split("{", 1)[0]


def _owner(pattern: str) -> list[str]:
    """The dvc.yaml stages with an output that contains every file `pattern` can match."""
    prefix = _static_prefix(pattern)
    owners = []
    for name, stage in STAGES.items():
        for entry in _outs(stage):
            if pattern == entry or prefix.startswith(entry.rstrip("/") + "/"):
                owners.append(name)
    return owners


def _outs(stage: dict) -> list[str]:
    entries = [*stage.get("outs", []), *stage.get("metrics", [])]
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def _run_rules(stage: dict) -> list[str] | None:
    """The rules a stage runs through `vtdl.dvcsync run`; None for the whole default target."""
    cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
    for cmd in cmds:
        match = re.fullmatch(r"python -m vtdl\.dvcsync run ([\w ]+)", cmd.strip())
        if match:
            return match[1].split()
    assert any(cmd.startswith("snakemake ") for cmd in cmds), cmds
    return None


# ---- no drift between Snakemake and dvc.yaml ----------------------------------------------------


def test_every_snakemake_output_is_a_dvc_output_of_exactly_one_stage(rules):
    assert {"synth", "extract", "splits", "pretrain"} <= set(rules)
    for name, rule in rules.items():
        for pattern in rule["outputs"]:
            owners = _owner(pattern)
            assert len(owners) == 1, (
                f"rule {name}: output {pattern} is covered by {owners or 'no'} dvc.yaml stage"
            )


def test_each_stage_runs_exactly_the_rules_whose_outputs_it_versions(rules):
    owned: dict[str, set[str]] = {name: set() for name in STAGES}
    for name, rule in rules.items():
        for pattern in rule["outputs"]:
            owned[_owner(pattern)[0]].add(name)
    whole = [name for name, stage in STAGES.items() if _run_rules(stage) is None]
    assert whole == [list(STAGES)[-1]], "only the last stage runs the whole default target"
    for name, stage in STAGES.items():
        named = _run_rules(stage)
        if named is not None:
            assert set(named) == owned[name], f"stage {name} runs {named}, versions {owned[name]}"
            assert set(named) <= set(rules), f"stage {name}: unknown rule(s)"
        # The rule file and package code of each rule are deps of its stage.
        deps = set(stage.get("deps", []))
        for rule in owned[name]:
            assert rules[rule]["snakefile"] in deps, f"stage {name}: {rules[rule]['snakefile']}"
            for path in rules[rule]["code"]:  # a file or a folder above it
                assert any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps), (
                    f"stage {name}: rule {rule} runs {path}, which no dependency covers"
                )
        assert "Snakefile" in deps


def test_every_params_section_is_declared_by_a_stage():
    params = load_yaml(ROOT / "params.yaml")
    declared = [p for stage in STAGES.values() for p in stage.get("params", [])]
    for key in declared:
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml param {key}: not in params"
            node = node[part]
    sections = {key.split(".")[0] for key in declared}
    assert set(params) <= sections, (
        f"params.yaml sections without a stage: {set(params) - sections}"
    )


def test_dvc_config_keeps_caches_in_the_project_and_defaults_to_a_local_remote():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    core = config["core"]
    assert core["analytics"] == "false" and core["check_update"] == "false"
    assert "cache" not in config or "dir" not in config["cache"]  # default: .dvc/cache
    site = Path(core["site_cache_dir"])
    assert not site.is_absolute() and site.parts[0] == ".dvc"  # not /var/tmp/dvc
    url = config[f"'remote \"{core['remote']}\"'"]["url"]
    assert "://" not in url and not Path(url).is_absolute()  # a local folder, no set-up
    ignored = (ROOT / ".dvc" / ".gitignore").read_text().split()
    assert {"/cache", "/tmp", "/config.local"} <= set(ignored)


# ---- the helpers -------------------------------------------------------------------------------


def test_make_store_portable_rewrites_only_paths_inside_the_project(tmp_path):
    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE experiments (artifact_location TEXT)")
    con.execute("CREATE TABLE runs (artifact_uri TEXT)")
    con.executemany(
        "INSERT INTO experiments VALUES (?)",
        [(f"{tmp_path}/mlartifacts",), ("s3://bucket/x",), (f"{tmp_path}x/mlartifacts",)],
    )
    con.executemany(
        "INSERT INTO runs VALUES (?)",
        [(f"{tmp_path}/mlartifacts/r1/artifacts",), (f"file://{tmp_path}/mlartifacts/r2",)],
    )
    con.commit()
    con.close()
    assert tracking.make_store_portable(db, tmp_path) == 3
    assert tracking.make_store_portable(db, tmp_path) == 0  # idempotent
    con = sqlite3.connect(db)
    assert [r[0] for r in con.execute("SELECT * FROM experiments")] == [
        "mlartifacts",
        "s3://bucket/x",
        f"{tmp_path}x/mlartifacts",
    ]
    assert [r[0] for r in con.execute("SELECT * FROM runs")] == [
        "mlartifacts/r1/artifacts",
        "mlartifacts/r2",
    ]


def test_headline_metrics_average_seeds_and_keep_the_largest_clip_test(tmp_path):
    for seed, top1 in ((0, 0.5), (1, 0.7)):
        out = tmp_path / "finetune" / "ds" / "split1" / f"vtdl_small3d_s{seed}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        metrics = {
            "ds/split1/finetune/top1_1clip": 0.1,
            "ds/split1/finetune/top1_10clip": top1,
            "ds/split1/finetune/top5_10clip": 0.9,
        }
        out.write_text(json.dumps({"mlflow_run_id": "x", "metrics": metrics}))
    out = tmp_path / "retrieval" / "ds" / "split1" / "moco_td_small3d_s0.json"
    out.parent.mkdir(parents=True)
    metrics = {"ds/split1/retrieval/recall_at_1": 0.25, "ds/split1/retrieval/recall_at_10": 1}
    out.write_text(json.dumps({"metrics": metrics}))
    assert dvcsync.headline_metrics(tmp_path) == {
        "vtdl_small3d": {"ds/split1/finetune/top1_10clip": 0.6},
        "moco_td_small3d": {"ds/split1/retrieval/recall_at_1": 0.25},
    }


def test_status_parsing_lists_changed_outputs_and_stale_stages():
    status = {
        "data": [{"changed outs": {"data/frames": "modified", "data/raw": "not in cache"}}],
        "pretrain": [{"changed deps": {"src/vtdl": "modified"}}],
        "report": [{"changed outs": {"mlflow.db": "deleted"}}, "always changed"],
    }
    assert dvcsync.changed_outputs(status) == ["data/frames"]
    assert dvcsync.stale_stages(status) == ["pretrain"]


# ---- the collaborator story --------------------------------------------------------------------


@pytest.mark.slow
def test_push_pins_every_stage_and_keeps_caches_in_the_project(tiny_project):
    clone_a = tiny_project / "A"
    lock = load_yaml(clone_a / "dvc.lock")["stages"]
    assert list(lock) == list(STAGES)
    pinned = {out["path"] for stage in lock.values() for out in stage["outs"]}
    assert {"data/raw", "data/frames", "data/splits", "results/pretrain", "mlflow.db"} <= pinned
    assert all(out["md5"] for stage in lock.values() for out in stage["outs"])
    assert (clone_a / ".dvc" / "cache" / "files" / "md5").is_dir()
    assert (clone_a / ".dvc" / "tmp" / "site-cache").is_dir()
    remote = tiny_project / "vtdl-dvc-remote"  # ../vtdl-dvc-remote, next to clone A
    assert any((remote / "files" / "md5").iterdir())
    # Snakemake's bookkeeping stays out of the versioned folders.
    frames = next(o for o in lock["data"]["outs"] if o["path"] == "data/frames")
    assert frames["nfiles"] == len(
        [p for p in (clone_a / "data/frames").rglob("*") if p.is_file()]
    ) - len(list((clone_a / "data/frames").rglob(".snakemake_timestamp")))
    # `dvc metrics show` reads the headline metrics of every method.
    shown = run(clone_a, str(BIN / "dvc"), "metrics", "show", "--json")
    assert shown.returncode == 0, out(shown)
    (workspace,) = json.loads(shown.stdout).values()  # keyed "" (the workspace)
    metrics = workspace["data"]["results/metrics.json"]["data"]
    assert set(metrics) == {"scratch_small3d", "vtdl_small3d", "supervised_small3d"}
    assert "synth_ucf/split1/finetune/top1_2clip" in metrics["vtdl_small3d"]


@pytest.mark.slow
def test_a_fresh_clone_pulls_and_snakemake_runs_no_job(tiny_project):
    clone_a, clone_b = tiny_project / "A", clone(tiny_project, "B")
    pull = make("pull", clone_b)
    assert pull.returncode == 0, out(pull)

    dry = run(clone_b, str(BIN / "snakemake"), "--cores", "2", "--dry-run")
    assert dry.returncode == 0, out(dry)
    assert "Nothing to be done" in out(dry), out(dry)
    # A branch switched and back touches sources without editing them: still nothing to run
    # (every job has its metadata, so Snakemake compares the sources' checksums, not times).
    later = time.time() + 60
    for path in (clone_b / "src").rglob("*.py"):
        os.utime(path, (later, later))
    dry = run(clone_b, str(BIN / "snakemake"), "--cores", "2", "--dry-run")
    assert "Nothing to be done" in out(dry), out(dry)
    folders = ("data", "results")
    assert digests(clone_b, *folders) == digests(clone_a, *folders)

    # The MLflow store travelled and is B's own: with A's artifacts gone, B's report rebuilt
    # from the pulled store alone equals A's tables and has the confusion-matrix figures.
    shutil.move(clone_a / "mlartifacts", tiny_project / "A-mlartifacts")
    try:
        report = run(clone_b, str(BIN / "vtdl"), "report", "--out", "rebuilt", "--clips", "2")
    finally:
        shutil.move(tiny_project / "A-mlartifacts", clone_a / "mlartifacts")
    assert report.returncode == 0, out(report)
    assert "9 downstream and 2 pretraining runs" in out(report)
    tables = clone_a / "results" / "tables"
    for table in tables.iterdir():
        assert (clone_b / "rebuilt" / "tables" / table.name).read_bytes() == table.read_bytes()
    assert list((clone_b / "rebuilt" / "plots" / "confusion").glob("*.png"))


@pytest.mark.slow
def test_pull_refuses_to_overwrite_changed_outputs_and_names_missing_objects(tiny_project):
    clone_c = clone(tiny_project, "C")
    # An object missing on the remote: the pull fails and names the output.
    store = next(
        o
        for o in load_yaml(clone_c / "dvc.lock")["stages"]["report"]["outs"]
        if o["path"] == "mlflow.db"
    )
    obj = tiny_project / "vtdl-dvc-remote" / "files" / "md5" / store["md5"][:2] / store["md5"][2:]
    hidden = obj.with_name(obj.name + ".hidden")
    obj.rename(hidden)
    try:
        failed = make("pull", clone_c)
    finally:
        hidden.rename(obj)
    assert failed.returncode != 0
    assert "missing from the remote: mlflow.db" in out(failed), out(failed)

    pulled = make("pull", clone_c)
    assert pulled.returncode == 0, out(pulled)
    table = clone_c / "results" / "tables" / "ablation.md"
    table.write_text(table.read_text() + "\nlocal edit\n")
    refused = make("pull", clone_c)
    assert refused.returncode != 0
    assert "changed in the workspace" in out(refused) and "results/tables" in out(refused)
    assert table.read_text().endswith("local edit\n")  # not overwritten
    forced = make("pull", clone_c, "FORCE=1")
    assert forced.returncode == 0, out(forced)
    assert not table.read_text().endswith("local edit\n")


@pytest.mark.slow
def test_snakemake_report_dvc_plots_and_an_experiment(tiny_project):
    work = clone(tiny_project, "D")
    pulled = make("pull", work)
    assert pulled.returncode == 0, out(pulled)

    # Snakemake's HTML report: the captioned tables and figures of the finished pipeline.
    report = make("report", work)
    assert report.returncode == 0, out(report)
    html = (work / "results" / "report.html").read_text(encoding="utf-8")
    for expected in ("ablation.csv", "differences.csv", "pretext.csv", "Figures", "Tables"):
        assert expected in html, expected
    assert "pretrain_curves_" in html and "ablation_small3d" in html  # figures by name

    # `dvc plots show` renders every figure of the report.
    plots = run(work, str(BIN / "dvc"), "plots", "show", "-o", "dvc_plots")
    assert plots.returncode == 0, out(plots)
    page = (work / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    assert "ablation_small3d" in page and "pretrain_curves_" in page and "confusion" in page

    # An experiment with one parameter changed re-runs its dependants and is listed with it.
    exp = run(work, str(BIN / "dvc"), "exp", "run", "-S", "pretrain.lr=0.002", "-n", "lr2")
    assert exp.returncode == 0, out(exp)
    shown = run(work, str(BIN / "dvc"), "exp", "show", "--json")
    assert shown.returncode == 0, out(shown)
    found = [
        e
        for entry in json.loads(shown.stdout)
        for e in entry.get("experiments") or []
        if e.get("name") == "lr2"
    ]
    assert found, shown.stdout[-3000:]
    (record,) = [r["data"] for e in found for r in e["revs"]]
    assert record["params"]["params.yaml"]["data"]["pretrain"]["lr"] == 0.002
    metrics = record["metrics"]["results/metrics.json"]["data"]
    assert "synth_ucf/split1/linear/top1_2clip" in metrics["vtdl_small3d"]
