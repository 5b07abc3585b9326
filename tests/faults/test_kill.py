"""SIGKILL of extraction, pretraining, fine-tuning and the report at random moments: a killed
stage leaves no half-written output, and re-running the same command finishes with exactly what
an uninterrupted run writes.

Each trial starts the real `vtdl` command in its own process, kills it with SIGKILL after a
delay drawn from the trial's seed (between the end of its start-up and its expected end,
measured on an uninterrupted reference run), checks what is on disk, re-runs the command and
compares the outputs with the reference. Killed pretraining resumes from its last checkpoint
and ends bit-equal on the CPU; its MLflow run is continued, not duplicated.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from pretrain_jobs import pretrain_argv, tiny_settings

from vtdl import tracking
from vtdl.checkpoint import load_checkpoint
from vtdl.errors import VtdlError

ROOT = Path(__file__).resolve().parents[2]
VTDL = [sys.executable, "-m", "vtdl.cli"]
TRIALS = (0, 1, 2)


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}


def _timed_run(command: list[str], store: Path) -> float:
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=_env(store), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return time.monotonic() - start


def _kill_after(command: list[str], store: Path, delay: float) -> int:
    """Start `command`, SIGKILL it (and its children) after `delay` seconds; its exit code."""
    process = subprocess.Popen(
        command, env=_env(store), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


def _leftovers(folder: Path, stem: str = "") -> list[str]:
    """Hidden files beside outputs named `stem...`: a temporary of a killed write, or an MLflow
    run claim (`tracking.claim_path`); a re-run must have removed them all."""
    return sorted(p.name for p in folder.glob(f".{stem}*"))


def _nothing_running() -> None:
    """No run in the store is left RUNNING: one a killed attempt left is KILLED, superseded."""
    for run in tracking.find_runs():
        assert run["status"] != "RUNNING", run
        if run["status"] == "KILLED":
            assert run["tags"].get(tracking.TAG_SUPERSEDED_BY), run


def _delay(seed: int, reference_s: float) -> float:
    """A moment inside the run: after about the first 40% (imports, set-up), before its end."""
    return float(np.random.default_rng(seed).uniform(0.4, 0.95) * reference_s)


@pytest.fixture(scope="module")
def pretrain_reference(tmp_path_factory):
    """The tiny frame set, its settings and an uninterrupted job's outputs and duration."""
    from vtdl.data.framestore import frame_file_path, write_frames

    root = tmp_path_factory.mktemp("kill-pretrain")
    rng = np.random.default_rng(0)
    frames, lists = root / "frames", root / "splits"
    (lists / "split1").mkdir(parents=True)
    rows = ["path,label,class,frames"]
    for v in range(12):
        rel = f"c{v % 3}/v{v}.avi"
        count = int(rng.integers(10, 20))
        write_frames(frame_file_path(frames, rel), rng.integers(0, 255, (count, 20, 24, 3),
                     dtype=np.uint8), codec="raw")  # fmt: skip
        rows.append(f"{rel},{v % 3},c{v % 3},{count}")
    (lists / "split1" / "train.csv").write_text("\n".join(rows) + "\n")
    settings = tiny_settings(epochs=8)
    argv = pretrain_argv(root, frames, lists, "reference", settings)
    seconds = _timed_run([*VTDL, *argv], root / "mlflow.db")
    return root, frames, lists, settings, seconds


@pytest.mark.parametrize("trial", TRIALS)
def test_killed_pretraining_resumes_to_the_uninterrupted_weights(
    pretrain_reference, fault, trial, monkeypatch
):
    fault("SIGKILL", "pretraining killed at a random moment")
    root, frames, lists, settings, seconds = pretrain_reference
    store = root / "mlflow.db"
    command = [*VTDL, *pretrain_argv(root, frames, lists, f"killed{trial}", settings)]
    _kill_after(command, store, _delay(trial, seconds))
    out = root / f"killed{trial}"
    # Whatever is in place of an output is whole (written to a temporary name, then renamed).
    if (out / "checkpoint.pt").exists():
        assert load_checkpoint(out / "checkpoint.pt")["epoch"] >= 1
    if (out / "encoder.pt").exists():
        load_checkpoint(out / "encoder.pt")
    if (out / "summary.json").exists():
        json.loads((out / "summary.json").read_text())
    _timed_run(command, store)
    reference = load_checkpoint(root / "reference" / "checkpoint.pt")
    resumed = load_checkpoint(out / "checkpoint.pt")
    assert resumed["epoch"] == reference["epoch"] == settings["epochs"]
    assert all(torch.equal(reference["model"][k], resumed["model"][k]) for k in reference["model"])
    summary = json.loads((out / "summary.json").read_text())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    # Continued, not duplicated: the job's finished runs in the store are one.
    finished = [
        r
        for r in tracking.find_runs("tags.stage = 'pretrain'")
        if r["status"] == "FINISHED"
        and r["tags"].get("checkpoint_path") == str(out / "checkpoint.pt")
    ]
    assert [r["run_id"] for r in finished] == [summary["mlflow_run_id"]]
    _nothing_running()
    assert _leftovers(out) == []


def _write_videos(folder: Path, count: int) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for v in range(count):
        with av.open(str(folder / f"v_Shard_g{v // 4 + 1:02d}_c{v % 4 + 1:02d}.avi"), "w") as out:
            stream = out.add_stream("mpeg4", rate=Fraction(25))
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for _ in range(40):
                image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(stream.encode())


@pytest.fixture(scope="module")
def extract_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-extract")
    _write_videos(root / "videos" / "Shard", 40)

    def command(out: str) -> list[str]:
        return [*VTDL, "extract", "--format", "ucf101", "--videos", str(root / "videos"),
                "--out", str(root / out), "--shard", "Shard", "--short-side", "24",
                "--codec", "jpeg"]  # fmt: skip

    seconds = _timed_run(command("reference"), root / "mlflow.db")
    return root, command, seconds


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("trial", TRIALS)
def test_killed_extraction_leaves_no_partial_shard_and_reruns_to_the_same_frames(
    extract_reference, fault, trial
):
    fault("SIGKILL", "extraction killed at a random moment")
    root, command, seconds = extract_reference
    out = root / f"killed{trial}"
    _kill_after(command(f"killed{trial}"), root / "mlflow.db", _delay(trial, seconds))
    shard = out / "Shard"
    # The shard is swapped in whole: absent, or complete with its manifest.
    if shard.exists():
        assert (shard / "manifest.json").is_file()
        assert _tree(shard) == _tree(root / "reference" / "Shard")
    _timed_run(command(f"killed{trial}"), root / "mlflow.db")
    assert _tree(shard) == _tree(root / "reference" / "Shard")
    assert _leftovers(out) == []


@pytest.fixture(scope="module")
def finetune_reference(tmp_path_factory):
    """A labelled 3-class split (4 train + 2 test videos each) and an uninterrupted scratch
    fine-tune of it; then a copy of its MLflow store for the report trials."""
    from vtdl.config import load_settings
    from vtdl.data.framestore import frame_file_path, write_frames

    root = tmp_path_factory.mktemp("kill-finetune")
    rng = np.random.default_rng(2)
    frames, lists = root / "frames", root / "splits"
    (lists / "split1").mkdir(parents=True)
    rows = {"train": ["path,label,class,frames"], "test": ["path,label,class,frames"]}
    for label in range(3):
        for i in range(6):
            rel = f"c{label}/v{i}.avi"
            video = rng.integers(0, 255, (12, 18, 22, 3), dtype=np.uint8)
            write_frames(frame_file_path(frames, rel), video, codec="raw")
            rows["train" if i < 4 else "test"].append(f"{rel},{label},c{label},12")
    for which, lines in rows.items():
        (lists / "split1" / f"{which}.csv").write_text("\n".join(lines) + "\n")
    (lists / "classes.csv").write_text("label,class\n0,c0\n1,c1\n2,c2\n")
    settings = load_settings(str(ROOT / "params.yaml"), "downstream")
    settings.update(
        labels_per_class=3, clip_len=4, stride=2, crop_size=16, resize_short=18, test_clips=3,
        batch_size=4, eval_batch_size=4, num_workers=0, device="cpu",
    )  # fmt: skip
    settings["finetune"] = {**settings["finetune"], "epochs": 10, "checkpoint_every": 1}

    def command(out: str) -> list[str]:
        return [*VTDL, "finetune", "--encoder", "none", "--backbone", "small3d",
                "--backbone-options", json.dumps({"channels": [4, 8, 8, 16]}), "--seed", "5",
                "--dataset", "tinyset", "--split", "1", "--lists", str(lists), "--frames",
                str(frames), "--out", str(root / f"{out}.json"), "--settings",
                json.dumps(settings), "--save-model", str(root / f"{out}.pt"),
                "--threads", "1"]  # fmt: skip

    seconds = _timed_run(command("reference"), root / "mlflow.db")
    (root / "report.db").write_bytes((root / "mlflow.db").read_bytes())
    return root, command, seconds


@pytest.mark.parametrize("trial", TRIALS)
def test_killed_finetuning_resumes_to_the_uninterrupted_result(finetune_reference, fault, trial):
    fault("SIGKILL", "fine-tuning killed at a random moment")
    root, command, seconds = finetune_reference
    _kill_after(command(f"killed{trial}"), root / "mlflow.db", _delay(trial, seconds))
    result = root / f"killed{trial}.json"
    if result.exists():  # killed after the end: the result is whole
        json.loads(result.read_text())
    _timed_run(command(f"killed{trial}"), root / "mlflow.db")
    reference = json.loads((root / "reference.json").read_text())
    assert json.loads(result.read_text())["metrics"] == reference["metrics"]
    a = load_checkpoint(root / "reference.pt")["model"]
    b = load_checkpoint(root / f"killed{trial}.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (root / f"killed{trial}.ckpt").exists()  # the resume checkpoint goes once done
    assert _leftovers(root, f"killed{trial}.") == []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        _nothing_running()


@pytest.mark.parametrize("trial", TRIALS)
def test_a_killed_report_leaves_whole_tables_and_reruns_to_the_same(
    finetune_reference, fault, trial
):
    fault("SIGKILL", "report killed at a random moment")
    root, _, _ = finetune_reference
    store = root / "report.db"

    def report(out: str) -> list[str]:
        return [*VTDL, "report", "--out", str(root / out), "--data", str(root / "no-data")]

    if not (root / "report-reference").exists():
        _timed_run(report("report-reference"), store)
    expected = _tree(root / "report-reference" / "tables")
    start = time.monotonic()
    _timed_run(report("report-timing"), store)
    _kill_after(report(f"report{trial}"), store, _delay(trial, time.monotonic() - start))
    tables = root / f"report{trial}" / "tables"
    if tables.exists():  # every table there is whole: written to a temporary name, renamed
        for name, data in _tree(tables).items():
            assert Path(name).name.startswith(".") or data == expected[name], name
    _timed_run(report(f"report{trial}"), store)
    assert _tree(tables) == expected  # and the killed write's temporaries are gone


# Opens the tracking store, SIGKILLed before its argv[1]-th SQL statement (0: never); prints how
# many statements ran and the number of the first that made an `_alembic_tmp` table (0: none).
# argv[2] "mlflow" opens it as plain MLflow does, "vtdl" through vtdl.
_OPEN_STORE_KILLED_AT_STATEMENT = """
import os, signal, sys
import sqlalchemy

kill_at, opener = int(sys.argv[1]), sys.argv[2]
count = first_tmp = 0

@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "before_cursor_execute")
def count_or_die(conn, cursor, statement, *args):
    global count, first_tmp
    count += 1
    if count == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    if not first_tmp and "CREATE TABLE _alembic_tmp" in statement:
        first_tmp = count

if opener == "mlflow":
    from mlflow import MlflowClient
    MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).search_experiments()
else:
    from vtdl import tracking
    tracking.find_runs()
print(count, first_tmp)
"""


def _open_store(store: Path, kill_at: int, opener: str = "vtdl") -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", _OPEN_STORE_KILLED_AT_STATEMENT, str(kill_at), opener]
    return subprocess.run(command, env=_env(store), capture_output=True, text=True, timeout=300)


def _tables(store: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(store)) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]


def _log_one_run(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store takes a run and gives it back (this process, the store's usual path)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    with tracking.start_run("pretrain", {"lr": 0.1}, {"seed": 0}) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    (found,) = tracking.find_runs("tags.stage = 'pretrain'")
    assert found["run_id"] == run.run_id and found["metrics"]["loss"] == 1.0


@pytest.fixture(scope="module")
def creation_statements(tmp_path_factory) -> int:
    """How many SQL statements opening a new store runs (creating its schema included)."""
    store = tmp_path_factory.mktemp("store-count") / "mlflow.db"
    done = _open_store(store, 0)
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.split()[0])


@pytest.mark.parametrize("trial", TRIALS)
def test_a_store_whose_creation_was_killed_is_created_again(
    creation_statements, tmp_path, fault, trial, monkeypatch
):
    fault("SIGKILL", "MLflow store creation killed at a random statement")
    store = tmp_path / "mlflow.db"
    kill_at = int(np.random.default_rng(trial).integers(1, creation_statements + 1))
    assert _open_store(store, kill_at).returncode == -signal.SIGKILL
    # Either no schema at all or a whole one: never MLflow's half-migrated tables.
    if store.exists():
        assert not any(n.startswith("_alembic_tmp") for n in _tables(store))
    _log_one_run(store, monkeypatch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]  # no temporary left


def test_a_store_left_half_created_by_plain_mlflow_is_created_again(tmp_path, monkeypatch):
    """The state a killed job of an earlier vtdl left (MLflow created stores in place): alembic's
    `_alembic_tmp_experiments` copy present, MLflow itself refuses the file ever after."""
    store = tmp_path / "mlflow.db"
    first_tmp = int(_open_store(tmp_path / "count.db", 0, "mlflow").stdout.split()[1])
    assert first_tmp > 0
    # Kill plain MLflow right after it made the temporary copy of a table (the CI run's state).
    assert _open_store(store, first_tmp + 1, "mlflow").returncode == -signal.SIGKILL
    assert any(n.startswith("_alembic_tmp") for n in _tables(store))
    again = _open_store(store, 0, "mlflow")
    assert again.returncode != 0  # plain MLflow refuses the file ever after
    _log_one_run(store, monkeypatch)


def test_a_store_that_holds_runs_is_never_replaced(tmp_path, monkeypatch):
    store = tmp_path / "mlflow.db"
    _log_one_run(store, monkeypatch)
    with contextlib.closing(sqlite3.connect(store)) as conn, conn:
        conn.execute("DROP TABLE webhooks")  # a table missing: MLflow would create the schema
    tracking._client.cache_clear()
    with contextlib.suppress(VtdlError):  # MLflow's own way with such a store may refuse it
        tracking.find_runs()
    with contextlib.closing(sqlite3.connect(store)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)
