"""Stale results: a `dvc.lock` made with other code or params than the workspace holds.

`make pull` would bring its outputs and `snakemake --touch` would mark them up to date, so
results of other parameters would pass for this checkout's (a fresh clone has no Snakemake
metadata to notice the difference). It must say so before anything is written, and with
FORCE=1 pull the outputs marked out of date, so the next run redoes exactly those stages.
(A changed video re-extracting its shard is tested in test_hostile_names.py; an edited source
module re-running its stages in tests/test_workflow.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_workflow import job_counts
from tiny_project import BIN, clone, make, out, run

from vtdl import dvcsync

# `dvc status --json` of a fresh clone whose params.yaml (pretrain) and src/vtdl differ from
# dvc.lock: the other stages' outputs are missing ("deleted"), which is what a pull is for.
STATUS = {
    "data": [{"changed outs": {"data/raw": "not in cache", "data/frames": "not in cache"}}],
    "pretrain": [
        {"changed deps": {"src/vtdl": "modified", "data/frames": "deleted",
                          "params.yaml": {"pretrain": "modified"}}},
        {"changed outs": {"results/pretrain": "not in cache"}},
    ],
    "downstream": [{"changed deps": {"data/frames": "deleted", "results/pretrain": "deleted"}}],
    "report": ["always changed"],
}  # fmt: skip


def test_the_mismatch_is_read_from_code_and_params_not_from_missing_outputs():
    outputs = {"data/raw", "data/frames", "results/pretrain"}
    assert dvcsync.mismatched_deps(STATUS, outputs) == {
        "pretrain": ["src/vtdl", "params.yaml (pretrain)"]
    }


def _times(*roots: Path) -> dict[str, int]:
    return {
        str(path): path.stat().st_mtime_ns
        for root in roots
        for path in ([root, *root.rglob("*")] if root.is_dir() else [root])
    }


@pytest.mark.slow
def test_make_pull_reports_a_dvc_lock_that_does_not_match_the_workspace(tiny_project, fault):
    fault("stale results", "dvc.lock made with other params than the workspace (make pull)")
    work = clone(tiny_project, "stale")
    first = make("pull", work)
    assert first.returncode == 0, out(first)
    pulled = [work / "data", work / "results", work / "mlflow.db"]
    before, times = fault.snapshot(pulled), _times(*pulled)

    params = json.loads((work / "params.yaml").read_text())  # the tiny project's is JSON
    params["pretrain"]["lr"] *= 2
    (work / "params.yaml").write_text(json.dumps(params, indent=1))
    refused = make("pull", work)
    assert refused.returncode != 0
    assert "dvc.lock does not match this workspace (stage pretrain: params.yaml (pretrain))" in (
        out(refused)
    ), out(refused)
    assert "Nothing was pulled" in out(refused) and "FORCE=1" in out(refused)
    fault.intact(before)
    assert _times(*pulled) == times  # not even touched

    forced = make("pull", work, "FORCE=1")
    assert forced.returncode == 0, out(forced)
    assert "stage(s) pretrain pulled but marked out of date" in forced.stdout, forced.stdout
    dry = run(work, str(BIN / "snakemake"), "--cores", "2", "--dry-run")
    assert dry.returncode == 0, out(dry)
    # The two pretraining jobs and the jobs of their encoders; the data stages and the
    # `scratch` evaluations (no encoder) stay as pulled.
    assert job_counts(out(dry)) == {
        "pretrain": 2, "features": 2, "finetune": 2, "linear": 2, "retrieval": 2,
        "report": 1, "all": 1,
    }, out(dry)  # fmt: skip
