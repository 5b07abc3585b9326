"""Concurrency on one MLflow store: 8 jobs (more than the cores) log to one local sqlite store at
once while the report reads it.

Each job is a small sleep-heavy program that uses the package's own tracking API
(`vtdl.tracking.start_run`, as every stage does): 20 parameters, 8 tags, two metrics at every
step written at once (no buffering: the most writes), a progress tag now and then, and at the end
the final metrics of a fine-tuning run. All 8 start together (a barrier after their imports).
Meanwhile the report's own reading (`load_store`, `write_tables`) runs in a loop and `vtdl report`
runs once as a command: none may fail, and every run they count must be a finished one, with
all its final metrics. Afterwards nothing may be lost: every parameter, tag and metric step of
every job is in the store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from vtdl import tracking
from vtdl.errors import VtdlError
from vtdl.report import write_tables
from vtdl.report.collect import load_store

VTDL = [sys.executable, "-m", "vtdl.cli"]
JOBS = 8
PARAMS = 20

_JOB = r"""
import sys, time
from pathlib import Path
from vtdl import tracking

job, folder = int(sys.argv[1]), Path(sys.argv[2])
steps = 30 + 10 * job  # they finish one after the other: the report sees both kinds
params = {"job": job, "nested": {f"p{k}": k * job + 0.5 for k in range(PARAMS)}}
tags = {"method": "vtdl", "backbone": "small3d", "dataset": "toy", "split": 1, "seed": job,
        "pretrain_dataset": "toy", "job": job, "kind": "toy"}
(folder / f"ready{job}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
with tracking.start_run("finetune", params, tags, flush_interval_s=0) as run:
    for step in range(steps):
        run.log_metrics({"train_loss": job + step / 100, "train_top1": step / steps}, step=step)
        if step % 8 == 0:
            run.set_tags({"progress": step})
        time.sleep(0.04)
    run.log_metrics({"toy/split1/finetune/top1_1clip": job / 10,
                     "toy/split1/finetune/top5_1clip": job / 20}, step=steps)
print("done", flush=True)
""".replace("PARAMS", str(PARAMS - 1))  # "job" is the 20th


def test_eight_jobs_log_to_one_sqlite_store_while_the_report_reads_it(tmp_path, fault, monkeypatch):
    fault("concurrency", f"{JOBS} jobs logging to one sqlite store while the report reads it")
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", _JOB, str(job), str(tmp_path)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for job in range(JOBS)
    ]
    report = None
    seen: list[int] = []  # finished runs the report's reading counted, each time
    try:
        deadline = time.monotonic() + 240
        while not all((tmp_path / f"ready{job}").exists() for job in range(JOBS)):
            assert all(j.poll() is None for j in jobs), [j.communicate()[1] for j in jobs]
            assert time.monotonic() < deadline, "the jobs never got ready"
            time.sleep(0.05)
        with pytest.raises(VtdlError, match="does not exist"):  # MLflow imported before "go"
            load_store()
        (tmp_path / "go").touch()
        while any(j.poll() is None for j in jobs):
            try:
                counted = load_store()
            except VtdlError as err:  # before the first job ends: no finished run yet
                assert "has no downstream runs" in str(err) or "does not exist" in str(err), err
                time.sleep(0.05)
                continue
            for run in counted.downstream:  # finished runs only, each complete
                job = run.seed
                assert run.metrics == {"top1_1clip": job / 10, "top5_1clip": job / 20}, run
            write_tables(counted, tmp_path / "tables", clips=1)
            seen.append(len(counted.downstream))
            time.sleep(0.2)  # a reader, not a busy loop competing with the writers for the cores
            if report is None:  # the real command too, from the first finished run on
                report = subprocess.Popen(
                    [*VTDL, "report", "--out", str(tmp_path / "report"), "--clips", "1",
                     "--data", str(tmp_path / "no-data")], env=env, cwd=tmp_path,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                )  # fmt: skip
        outcomes = [j.communicate(timeout=240) for j in jobs]
        report_out = report.communicate(timeout=240) if report else ("", "")
    finally:
        for process in [*jobs, *([report] if report else [])]:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for job, (out, err) in enumerate(outcomes):
        assert jobs[job].returncode == 0 and out == "done\n", err[-3000:]
    assert report is not None and report.returncode == 0, report_out[1][-3000:]
    assert (tmp_path / "report" / "tables" / "ablation.md").is_file()
    # The reading overlapped the writing: it saw some runs finished and others not yet.
    assert any(0 < n < JOBS for n in seen), seen

    runs = tracking.find_runs("tags.kind = 'toy'")
    assert sorted(int(r["tags"]["job"]) for r in runs) == list(range(JOBS))
    for run in runs:
        job = int(run["tags"]["job"])
        steps = 30 + 10 * job
        assert run["status"] == "FINISHED"
        assert len(run["params"]) == PARAMS
        assert run["params"]["nested.p3"] == str(3 * job + 0.5)
        assert run["tags"]["progress"] == str((steps - 1) // 8 * 8)
        assert {"method", "backbone", "dataset", "split", "seed", "stage"} <= run["tags"].keys()
        for key in ("train_loss", "train_top1"):
            assert [s for s, _ in tracking.metric_history(run["run_id"], key)] == list(range(steps))
    assert len(load_store().downstream) == JOBS
