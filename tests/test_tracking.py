"""Tests for vtdl.tracking against real sqlite MLflow stores in temporary directories."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vtdl import tracking
from vtdl.errors import VtdlError
from vtdl.tracking import (
    find_runs,
    flatten_params,
    git_commit,
    metric_history,
    params_digest,
    start_run,
)

SRC = Path(tracking.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """One sqlite store shared by the module (opening MLflow costs seconds); cwd is its folder."""
    root = tmp_path_factory.mktemp("mlflow_store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.delenv("VTDL_EXPERIMENT", raising=False)
        mp.chdir(root)
        yield root


# ----------------------------------------------------------------------------------------------
# Parameters, digest, git
# ----------------------------------------------------------------------------------------------


def test_flatten_params_nests_keys_and_renders_values_compactly():
    nested = {
        "train": {"lr": 0.05, "epochs": 3, "crop": [32, 32], "aug": {}, "name": "vtdl"},
        "flags": {"amp": True, "resume": None},
        "path": Path("data/frames"),
    }
    assert flatten_params(nested) == {
        "train.lr": "0.05",
        "train.epochs": "3",
        "train.crop": "[32,32]",
        "train.aug": "{}",
        "train.name": "vtdl",
        "flags.amp": "true",
        "flags.resume": "null",
        "path": "data/frames",
    }
    assert flatten_params({"a": {"b": 1}}, sep="/") == {"a/b": "1"}


def test_flatten_params_truncates_long_values_with_a_distinguishing_marker():
    long_a = "x" * 7000 + "a"
    long_b = "x" * 7000 + "b"
    flat = flatten_params({"a": long_a, "b": long_b, "short": "y" * 6000})
    assert len(flat["a"]) == tracking.MAX_PARAM_VALUE_LENGTH
    assert flat["a"].startswith("xxxx")
    assert "truncated 7001 chars" in flat["a"]
    assert flat["a"] != flat["b"]  # the hash in the marker tells them apart
    assert flat["short"] == "y" * 6000  # at the limit: untouched


def test_flatten_params_rejects_colliding_and_unstorable_keys():
    with pytest.raises(VtdlError, match="'a.b' appears twice"):
        flatten_params({"a.b": 1, "a": {"b": 2}})
    with pytest.raises(VtdlError, match=r"key 'bad\(key\)'"):
        flatten_params({"bad(key)": 1})
    with pytest.raises(VtdlError, match="key 'a/'"):
        flatten_params({"a": {"": 1}}, sep="/")


def test_params_digest_is_canonical_and_stable():
    params = {"b": [1, 2], "a": {"y": 0.5, "x": "s"}}
    reordered = {"a": {"x": "s", "y": 0.5}, "b": (1, 2)}
    digest = params_digest(params)
    assert digest == params_digest(reordered)
    assert len(digest) == 16
    # The canonical form is sorted, compact JSON: the digest is the same in every process.
    canonical = b'{"a":{"x":"s","y":0.5},"b":[1,2]}'
    assert digest == hashlib.sha256(canonical).hexdigest()[:16]
    assert params_digest({**params, "b": [1, 3]}) != digest


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_is_unknown_outside_git_and_marks_dirty_work_trees(tmp_path: Path):
    assert git_commit(tmp_path) == "unknown"

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "untracked.txt").write_text("output\n")
    assert git_commit(tmp_path) == head  # untracked outputs do not count
    (tmp_path / "a.txt").write_text("two\n")
    assert git_commit(tmp_path) == f"{head}-dirty"


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


def test_run_records_params_tags_metrics_and_artifacts(store: Path):
    params = {"train": {"lr": 0.1, "crop": [32, 32]}, "seed": 7}
    tags = {"dataset": "synth_ucf", "backbone": "r3d", "method": "vtdl", "seed": 7, "split": None}
    report = store / "report.txt"
    report.write_text("hello\n")
    with start_run("pretrain", params, tags, run_name="full-run") as run:
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 10}, step=step)
        run.log_metric("odd", float("nan"), step=0)
        run.log_artifact(report, artifact_path="logs")
        run.log_text("a: 1\n", "config/params.yaml")
        run.log_dict({"k": [1, 2]}, "config/summary.json")
        run.set_tags({"note": "extra"})
        run.log_params({"derived": {"num_videos": 40}})
    with start_run(
        "finetune", {"x": 1}, {"dataset": "synth_ucf"}, parent_run_id=run.run_id
    ) as child:
        pass

    (found,) = find_runs("tags.method = 'vtdl' and tags.stage = 'pretrain'")
    assert found["run_id"] == run.run_id
    assert found["run_name"] == "full-run"
    assert found["status"] == "FINISHED"
    assert found["params"] == {
        "train.lr": "0.1",
        "train.crop": "[32,32]",
        "seed": "7",
        "derived.num_videos": "40",
    }
    assert found["metrics"]["loss"] == pytest.approx(0.2)  # latest step
    assert found["metrics"]["acc"] == pytest.approx(0.4)
    t = found["tags"]
    assert t["stage"] == "pretrain"
    assert t["params_digest"] == params_digest(params)
    assert t["git_commit"] == git_commit()
    assert (t["dataset"], t["backbone"], t["method"], t["seed"]) == (
        "synth_ucf",
        "r3d",
        "vtdl",
        "7",
    )
    assert "split" not in t and t["note"] == "extra"
    assert metric_history(run.run_id, "loss") == [
        (s, pytest.approx(1.0 / (s + 1))) for s in range(5)
    ]
    (step, value) = metric_history(run.run_id, "odd")[0]
    assert step == 0 and math.isnan(value)

    # Artifacts live inside the project (next to the store), never in ./mlruns or a temp dir.
    artifacts = Path(found["artifact_uri"])
    assert artifacts.is_relative_to(store / tracking.ARTIFACT_DIR_NAME)
    assert (artifacts / "logs" / "report.txt").read_text() == "hello\n"
    assert (artifacts / "config" / "params.yaml").read_text() == "a: 1\n"
    assert (artifacts / "config" / "summary.json").exists()
    assert not (store / "mlruns").exists()

    (nested,) = find_runs(f"tags.`mlflow.parentRunId` = '{run.run_id}'")
    assert nested["run_id"] == child.run_id and nested["tags"]["stage"] == "finetune"


def test_run_is_failed_on_exception_and_keeps_its_metrics(store: Path):
    with pytest.raises(RuntimeError, match="boom"):
        with start_run("pretrain", {"p": 1}, {"scenario": "fails"}) as run:
            run.log_metrics({"loss": 3.0}, step=0)
            raise RuntimeError("boom")
    (found,) = find_runs("tags.scenario = 'fails'")
    assert found["run_id"] == run.run_id
    assert found["status"] == "FAILED"
    assert metric_history(run.run_id, "loss") == [(0, 3.0)]


def test_resume_continues_the_same_run_with_both_halves_of_the_curve(store: Path):
    params = {"train": {"epochs": 10}}
    tags = {"scenario": "resume"}
    with pytest.raises(KeyboardInterrupt):
        with start_run("pretrain", params, tags) as first:
            for step in range(5):
                first.log_metrics({"loss": 10.0 - step}, step=step)
            raise KeyboardInterrupt  # the job is stopped after step 4 (checkpoint at step 2)
    assert find_runs("tags.scenario = 'resume'")[0]["status"] == "KILLED"

    with start_run("pretrain", params, tags, resume_run_id=first.run_id) as second:
        assert second.run_id == first.run_id and second.resumed
        for step in range(3, 10):  # restarts after the checkpoint: steps 3, 4 are repeated
            second.log_metrics({"loss": 100.0 + step}, step=step)

    (found,) = find_runs("tags.scenario = 'resume'")
    assert found["status"] == "FINISHED"
    assert found["tags"]["resume_count"] == "1"
    expected = [(s, 10.0 - s) for s in range(3)] + [(s, 100.0 + s) for s in range(3, 10)]
    assert metric_history(first.run_id, "loss") == expected

    with pytest.raises(VtdlError, match=r"train.epochs: '10' -> '20'"):
        with start_run("pretrain", {"train": {"epochs": 20}}, tags, resume_run_id=first.run_id):
            pass
    assert find_runs("tags.scenario = 'resume'")[0]["status"] == "FINISHED"  # left untouched


def test_resuming_a_run_the_store_no_longer_has_starts_a_new_one(store: Path):
    gone = "0123456789abcdef0123456789abcdef"
    with start_run("pretrain", {"p": 1}, {"scenario": "gone"}, resume_run_id=gone) as run:
        assert run.run_id != gone and not run.resumed
    (found,) = find_runs("tags.scenario = 'gone'")
    assert found["tags"]["resume_of"] == gone


def test_metrics_are_batched_and_the_full_history_is_stored(store: Path):
    keys = [f"m{i}" for i in range(8)]
    with start_run("pretrain", {"p": 1}, {"scenario": "batched"}) as run:
        writes = []
        real_log_batch = run._client.log_batch

        def counting_log_batch(*args, **kwargs):
            writes.append(len(kwargs.get("metrics", ())))
            return real_log_batch(*args, **kwargs)

        run._client = _ClientProxy(run._client, log_batch=counting_log_batch)
        began = time.perf_counter()
        for step in range(1000):
            run.log_metrics({k: step + i / 10 for i, k in enumerate(keys)}, step=step)
        run.flush()
        elapsed = time.perf_counter() - began
    assert sum(writes) == 8000
    assert len(writes) == 8  # 1000 metrics per write, not one write per step
    # Loose bound (shared CI machine): one write per metric would take over a minute.
    assert elapsed < 20, f"logging 1000 steps x 8 metrics took {elapsed:.1f} s"
    for i, key in enumerate(keys):
        history = metric_history(run.run_id, key)
        assert [s for s, _ in history] == list(range(1000))
        assert history[-1][1] == pytest.approx(999 + i / 10)


def test_metrics_are_flushed_periodically_while_the_run_is_open(store: Path):
    with start_run("pretrain", {"p": 1}, {"scenario": "live"}, flush_interval_s=0.0) as run:
        run.log_metrics({"loss": 2.0}, step=0)
        assert metric_history(run.run_id, "loss") == [(0, 2.0)]
        with pytest.raises(VtdlError, match="metric key 'bad!'"):
            run.log_metrics({"bad!": 1.0}, step=1)
    with pytest.raises(RuntimeError, match="has ended"):
        run.log_metrics({"loss": 1.0}, step=1)


def test_experiment_comes_from_vtdl_experiment_and_a_deleted_one_is_named(
    store: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("VTDL_EXPERIMENT", "side-study")
    with start_run("pretrain", {"p": 1}, {"scenario": "side"}) as run:
        pass
    assert [r["run_id"] for r in find_runs("tags.scenario = 'side'")] == [run.run_id]
    assert find_runs("tags.scenario = 'side'", experiment="vtdl") == []

    client, _ = tracking._open_store()
    client.delete_experiment(run.experiment_id)
    with pytest.raises(VtdlError, match="experiment 'side-study' is deleted"):
        find_runs()


class _ClientProxy:
    """Delegates to an MlflowClient, with some methods replaced."""

    def __init__(self, client, **overrides):
        self._client = client
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._client, name)


# ----------------------------------------------------------------------------------------------
# Reading back, errors, concurrency
# ----------------------------------------------------------------------------------------------


def test_find_runs_of_a_missing_experiment_is_empty_and_bad_filters_are_named(store: Path):
    assert find_runs(experiment="no-such-experiment") == []
    with pytest.raises(VtdlError, match="filter 'tags.stage ==== 1'"):
        find_runs("tags.stage ==== 1")


@pytest.mark.parametrize(
    "make_uri",
    [
        lambda tmp: f"sqlite:///{tmp}",  # a directory, not a database file
        lambda tmp: f"sqlite:///{tmp}/not_a_db.txt",  # an existing file that is not sqlite
        lambda tmp: "./mlruns",  # the file store MLflow 3 refuses
        lambda tmp: "foo://nowhere",  # unknown scheme
        lambda tmp: f"http://127.0.0.1:{_closed_port()}",  # nothing listens there
    ],
    ids=["directory", "not-sqlite", "file-store", "scheme", "http-unreachable"],
)
def test_bad_tracking_uri_is_one_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_uri
):
    (tmp_path / "not_a_db.txt").write_text("plain text, certainly not a database\n" * 100)
    uri = make_uri(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    began = time.perf_counter()
    with pytest.raises(VtdlError) as caught:
        with start_run("pretrain", {"p": 1}, {}):
            pytest.fail("the run must not start")
    assert f"MLFLOW_TRACKING_URI={uri!r}" in str(caught.value)
    assert time.perf_counter() - began < 15  # no minutes of MLflow retries


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_writes_that_lose_the_sqlite_lock_are_retried(monkeypatch: pytest.MonkeyPatch):
    from mlflow.exceptions import MlflowException

    monkeypatch.setattr(tracking, "_LOCK_BACKOFF_S", 0.0)
    calls = []

    def flaky(value):
        calls.append(value)
        if len(calls) < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return value * 2

    assert tracking._retry(flaky, 21) == 42
    assert len(calls) == 3

    def broken():
        calls.append("broken")
        raise MlflowException("no such table: runs")

    calls.clear()
    with pytest.raises(MlflowException, match="no such table"):
        tracking._retry(broken)
    assert calls == ["broken"]  # other errors are not retried

    def always_locked():
        raise MlflowException("database is locked")

    with pytest.raises(MlflowException, match="locked"):
        tracking._retry(always_locked)


_CHILD = """
import pathlib, sys, time
# The slow imports happen before the start line, so both processes reach the store together.
import alembic.command, mlflow.store.tracking.sqlalchemy_store
from vtdl.tracking import start_run

folder, steps = pathlib.Path(sys.argv[1]), int(sys.argv[2])
(folder / "ready").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
with start_run("pretrain", {"w": "child"}, {"worker": "child"}, flush_interval_s=0.0) as run:
    for step in range(steps):
        run.log_metrics({"loss": step, "acc": -step}, step=step)
        if step % 20 == 0:
            run.set_tags({"progress": step})
"""


def test_two_processes_log_to_one_fresh_store_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """This process and a child open a fresh store together, then both write every step.

    A fresh store also makes them race to create the schema and the experiment.
    """
    import alembic.command  # noqa: F401 -- imported before the start line, as in the child
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    steps = 60
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    pythonpath = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), str(steps)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": pythonpath},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "ready").exists():
            assert child.poll() is None, child.communicate()[1]
            assert time.monotonic() < deadline, "the child process never got ready"
            time.sleep(0.01)
        (tmp_path / "go").touch()
        with start_run(
            "pretrain", {"w": "parent"}, {"worker": "parent"}, flush_interval_s=0
        ) as run:
            for step in range(steps):
                run.log_metrics({"loss": step, "acc": -step}, step=step)
                if step % 20 == 0:
                    run.set_tags({"progress": step})
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    assert out == ""  # quiet: no banners or progress bars on stdout
    assert "database is locked" not in err

    runs = find_runs()
    assert sorted(r["tags"]["worker"] for r in runs) == ["child", "parent"]
    for found in runs:
        assert found["status"] == "FINISHED"
        assert [s for s, _ in metric_history(found["run_id"], "loss")] == list(range(steps))


def _client():
    from mlflow import MlflowClient

    return MlflowClient(tracking.tracking_uri())


def test_the_experiment_is_a_described_model_training_experiment(store: Path):
    with start_run("pretrain", {}, {"scenario": "kind"}):
        pass
    experiment = _client().get_experiment_by_name("vtdl")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "pretraining runs" in experiment.tags["mlflow.note.content"].lower()
    # A store made before the tags existed gets them the next time a job opens it.
    client = _client()
    client.delete_experiment_tag(experiment.experiment_id, "mlflow.experimentKind")
    with start_run("pretrain", {}, {"scenario": "kind"}):
        pass
    kind = client.get_experiment(experiment.experiment_id).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"


def test_dataset_inputs_are_logged_once_even_when_a_run_is_resumed(store: Path, tmp_path: Path):
    listing = tmp_path / "train.csv"
    listing.write_text("a.avi,0\n")
    digest = hashlib.sha256(listing.read_bytes()).hexdigest()
    with start_run("pretrain", {"x": 1}, {"scenario": "inputs"}) as run:
        run.log_dataset("tinyset/split1/train", listing, digest, "training")
    with start_run("pretrain", {"x": 1}, {"scenario": "inputs"}, resume_run_id=run.run_id) as again:
        again.log_dataset("tinyset/split1/train", listing, digest, "training")
    (entry,) = _client().get_run(run.run_id).inputs.dataset_inputs
    assert entry.dataset.name == "tinyset/split1/train" and entry.dataset.digest == digest[:16]
    assert str(listing) in entry.dataset.source
    assert [(t.key, t.value) for t in entry.tags] == [("mlflow.data.context", "training")]


def test_a_dataset_row_inserted_by_a_concurrent_job_is_reused(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """On a tracking server two jobs logging the same list race for its dataset row; the loser
    gets a unique-key violation, and logging again links the row the winner inserted."""
    from mlflow.exceptions import MlflowException

    listing = tmp_path / "train.csv"
    listing.write_text("a.avi,0\n")
    digest = hashlib.sha256(listing.read_bytes()).hexdigest()
    with start_run("pretrain", {"x": 1}, {"scenario": "race"}) as run:
        real, calls = run._client.log_inputs, []

        def lost_the_race(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise MlflowException('duplicate key value violates unique constraint "dataset_pk"')
            return real(*args, **kwargs)

        monkeypatch.setattr(run._client, "log_inputs", lost_the_race)
        run.log_dataset("tinyset/split1/train", listing, digest, "training")
        assert len(calls) == 2
        monkeypatch.setattr(run._client, "log_inputs", lambda *a, **k: (_ for _ in ()).throw(
            MlflowException("permission denied")))  # fmt: skip
        with pytest.raises(MlflowException, match="permission denied"):  # not a race: raised
            run.log_dataset("tinyset/split1/test", listing, digest, "evaluation")
    (entry,) = _client().get_run(run.run_id).inputs.dataset_inputs
    assert entry.dataset.name == "tinyset/split1/train"


def test_nested_runs_and_system_metrics(store: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tracking, "SYSTEM_METRICS_INTERVAL_S", 0.2)
    with start_run("pretrain", {}, {"scenario": "system"}, system_metrics=True) as parent:
        time.sleep(1.0)
    with start_run("linear", {}, {"scenario": "system"}, parent_run_id=parent.run_id) as child:
        pass
    runs = {r["run_id"]: r for r in find_runs("tags.scenario = 'system'")}
    assert runs[child.run_id]["tags"]["mlflow.parentRunId"] == parent.run_id
    assert "system/cpu_utilization_percentage" in runs[parent.run_id]["metrics"]
    assert "system/system_memory_usage_megabytes" in runs[parent.run_id]["metrics"]
    assert not any(name.startswith("system/") for name in runs[child.run_id]["metrics"])


def test_mlflow_telemetry_is_off_unless_the_user_turns_it_on(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    tracking._quiet_mlflow()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    tracking._quiet_mlflow()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"


# A job's attempt that SIGKILLs itself inside its run: no `finally` runs, as under a real kill.
_KILLED_ATTEMPT = """
import os, signal, sys
from pathlib import Path
from vtdl.tracking import start_run
with start_run("linear", {"p": 1}, {"scenario": sys.argv[2]}, claim=Path(sys.argv[1])) as run:
    run.log_metrics({"loss": 1.0}, step=0)
    run.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_attempt(claim: Path, scenario: str, cwd: Path) -> str:
    """Run the attempt above; the id of the run it left behind (read from its claim)."""
    pythonpath = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_ATTEMPT, str(claim), scenario],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    return claim.read_text().strip()


def test_a_run_a_killed_attempt_left_running_is_marked_killed_by_the_next_attempt(
    store: Path, tmp_path: Path
):
    claim = tracking.claim_path(tmp_path / "result.json")
    assert claim == tmp_path / ".result.json.mlflow-run"
    ghost = _killed_attempt(claim, "abandoned", store)
    (left,) = find_runs("tags.scenario = 'abandoned'")
    assert left["run_id"] == ghost and left["status"] == "RUNNING"

    with start_run("linear", {"p": 1}, {"scenario": "abandoned"}, claim=claim) as run:
        assert claim.read_text().strip() == run.run_id  # this attempt's run, while it runs
    assert not claim.exists()
    runs = {r["run_id"]: r for r in find_runs("tags.scenario = 'abandoned'")}
    assert runs[ghost]["status"] == "KILLED"
    assert runs[ghost]["tags"]["superseded_by"] == run.run_id
    assert metric_history(ghost, "loss") == [(0, 1.0)]  # what it logged stays browsable
    assert runs[run.run_id]["status"] == "FINISHED"


def test_a_claimed_run_that_is_resumed_or_already_ended_is_left_alone(store: Path, tmp_path: Path):
    claim = tracking.claim_path(tmp_path / "encoder.pt")
    # Killed after a checkpoint that holds its run id: the next attempt resumes that run.
    ghost = _killed_attempt(claim, "claimed-resume", store)
    with start_run(
        "linear", {"p": 1}, {"scenario": "claimed-resume"}, resume_run_id=ghost, claim=claim
    ) as run:
        assert run.run_id == ghost
    (found,) = find_runs("tags.scenario = 'claimed-resume'")
    assert found["status"] == "FINISHED" and "superseded_by" not in found["tags"]

    # A claim naming a run that ended (killed between ending it and removing the file), or
    # holding no run id at all, changes nothing.
    for stale in (ghost, "not a run id"):
        claim.write_text(stale + "\n")
        with start_run("linear", {"p": 2}, {"scenario": "claimed-stale"}, claim=claim):
            pass
        assert not claim.exists()
    assert tracking.find_runs(f"attributes.run_id = '{ghost}'")[0]["status"] == "FINISHED"
    assert {r["status"] for r in find_runs("tags.scenario = 'claimed-stale'")} == {"FINISHED"}


def test_a_claim_that_cannot_be_written_ends_the_run_failed(store: Path, tmp_path: Path):
    # The output's folder is a file (root ignores read-only modes): writing the claim fails.
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    with pytest.raises(VtdlError, match="cannot write"):
        claim = blocker / ".x.mlflow-run"
        with start_run("linear", {"p": 1}, {"scenario": "unclaimable"}, claim=claim):
            pytest.fail("the block must not run without its claim")
    (run,) = find_runs("tags.scenario = 'unclaimable'")
    assert run["status"] == "FAILED"
