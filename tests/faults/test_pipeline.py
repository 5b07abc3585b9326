"""The whole pipeline under faults: `make reproduce` killed (SIGKILL to its process group, as a
crash, the OOM killer or a closed terminal does it) at seeded moments, and two runs started in
one folder at once.

A tiny copy of this project (tests/tiny_project.py's data set, pretraining of 6 epochs with a
checkpoint each) runs `make reproduce` for one fine-tuning result, which takes every stage up to
it: synth, extract (2 shards), splits, pretrain, finetune. An uninterrupted run is the
reference. A killed run must leave nothing half-written in place of an output; the same command
then finishes (no `snakemake --unlock` needed: src/vtdl/snakelock.py), Snakemake re-runs the
killed job, the killed pretraining resumes its MLflow run instead of starting a second one, and
everything ends equal to the reference: the data byte for byte, the encoder bit for bit, the
fine-tuning metrics and the report's tables.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_project import BIN, ROOT, copy_project, env, tiny_params

from vtdl import tracking
from vtdl.checkpoint import load_checkpoint
from vtdl.config import load_yaml
from vtdl.data.clips import read_list
from vtdl.data.framestore import FrameFile
from vtdl.report import write_tables
from vtdl.report.collect import load_store

pytestmark = pytest.mark.slow

EPOCHS = 6
JOB = "results/pretrain/synth_ucf/vtdl_small3d_s0"
TARGET = "results/finetune/synth_ucf/split1/vtdl_small3d_s0.json"


def _project(dest: Path) -> Path:
    """This checkout's workflow and package with the tiny params (6 pretraining epochs)."""
    params = tiny_params()
    params["pretrain"]["epochs"] = EPOCHS
    return copy_project(dest, params)


def _reproduce(*args: str) -> list[str]:
    """`make reproduce` with this venv (its set-up taken as done) for TARGET; the target comes
    first, since an option such as --forcerun takes every word after it."""
    venv = BIN.parent
    make = ["make", "-o", str(venv / ".installed"), f"VENV={venv}", "CORES=2", "reproduce"]
    return [*make, f"ARGS={' '.join((TARGET, *args))}"]


def _start(cwd: Path, command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, killed as a whole
    )  # fmt: skip


def _finish(process: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def _run(cwd: Path, *args: str) -> str:
    code, out = _finish(_start(cwd, _reproduce(*args)))
    assert code == 0, out[-5000:]
    return out


def _kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def _data(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted((root / "data").rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def _outputs_are_whole(root: Path) -> None:
    """Every output file present (hidden temporaries aside) is complete and readable."""
    for path in sorted(root.glob("data/**/*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts) or path.is_dir():
            continue
        if path.suffix == ".frames":
            FrameFile(path).close()  # header, index and size agree
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv" and path.parent.name.startswith("split"):
            read_list(path)
    for path in sorted((root / "results").rglob("*")) if (root / "results").exists() else []:
        if path.name.startswith("."):
            continue
        if path.suffix == ".pt":
            load_checkpoint(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


def _tables(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The report's tables (`vtdl report`'s own functions) over the folder's MLflow store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    clips = load_yaml(root / "params.yaml")["downstream"]["test_clips"]
    texts = write_tables(load_store(), root / "tables-check", clips)
    # all_metrics names each run; everything else must match to the byte.
    return {k: v for k, v in texts.items() if not k.startswith("all_metrics")}


def _pretrain_runs(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return [
        r for r in tracking.find_runs("tags.stage = 'pretrain'") if r["tags"]["method"] == "vtdl"
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, its duration, and its results."""
    profile = load_yaml(ROOT / "workflow" / "profiles" / "default" / "config.yaml")
    assert profile.get("rerun-incomplete") is True  # what re-runs a killed job's outputs
    root = _project(tmp_path_factory.mktemp("pipeline") / "reference")
    start = time.monotonic()
    _run(root)
    return root, time.monotonic() - start


def _same_as_reference(root: Path, reference: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _data(root) == _data(reference)
    a = load_checkpoint(reference / JOB / "encoder.pt")["state_dict"]
    b = load_checkpoint(root / JOB / "encoder.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    result = json.loads((root / TARGET).read_text())
    assert result["metrics"] == json.loads((reference / TARGET).read_text())["metrics"]
    assert _tables(root, monkeypatch) == _tables(reference, monkeypatch)
    finished = [r for r in _pretrain_runs(root, monkeypatch) if r["status"] == "FINISHED"]
    summary = json.loads((root / JOB / "summary.json").read_text())
    assert [r["run_id"] for r in finished] == [summary["mlflow_run_id"]]  # counted once
    # What the kill left beside the outputs went with the re-run: temporaries, run claims, and
    # no run stays RUNNING (one the killed job had open is KILLED, superseded by the re-run's).
    left = [
        str(p.relative_to(root))
        for folder in ("data", "results")
        for p in (root / folder).rglob(".*")
        if p.name.endswith((".tmp", ".old", ".mlflow-run"))
    ]
    assert left == []
    assert "RUNNING" not in {r["status"] for r in tracking.find_runs()}


@pytest.mark.parametrize("trial", [0])
def test_make_reproduce_killed_at_a_random_moment_reruns_to_the_same_results(
    reference, tmp_path, fault, trial, monkeypatch
):
    fault("SIGKILL", "make reproduce (Snakemake and its jobs) killed at a random moment")
    ref_root, seconds = reference
    root = _project(tmp_path / "project")
    process = _start(root, _reproduce())
    delay = float(np.random.default_rng(trial).uniform(0.1, 0.95)) * seconds
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        _kill(process)
    _outputs_are_whole(root)
    out = _run(root)  # the same command, nothing done by hand in between
    assert "LockException" not in out
    _same_as_reference(root, ref_root, monkeypatch)


@pytest.mark.parametrize("trial", [0])
def test_make_reproduce_killed_in_pretraining_resumes_its_run_once(
    reference, tmp_path, fault, trial, monkeypatch
):
    fault("SIGKILL", "make reproduce killed during pretraining (after a seeded epoch)")
    ref_root, _ = reference
    root = _project(tmp_path / "project")
    # The data stages as the reference left them (with Snakemake's records): only pretraining
    # and fine-tuning run.
    shutil.copytree(ref_root / "data", root / "data")
    shutil.copytree(ref_root / ".snakemake", root / ".snakemake")
    # At most EPOCHS - 3: the job goes on while this process polls and kills (a loaded machine
    # once ran the last epoch in that time), so at least two epochs remain to be killed in.
    epoch = int(np.random.default_rng(trial).integers(1, EPOCHS - 2))
    checkpoint = root / JOB / "checkpoint.pt"
    process = _start(root, _reproduce())
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, process.communicate()[0][-5000:]
        assert time.monotonic() < deadline, "the pretraining checkpoint never reached the epoch"
        if checkpoint.exists() and load_checkpoint(checkpoint)["epoch"] >= epoch:
            break
        time.sleep(0.05)
    _kill(process)
    _outputs_are_whole(root)
    assert not (root / JOB / "encoder.pt").exists()
    killed_at = load_checkpoint(checkpoint)["epoch"]
    assert killed_at < EPOCHS, "killed too late: the job had finished"
    out = _run(root)
    assert "removed the Snakemake lock" in out and "rule pretrain" in out
    runs = _pretrain_runs(root, monkeypatch)
    assert len(runs) == 1, runs  # the killed run was continued, not started again
    assert int(runs[0]["tags"]["resume_count"]) == 1
    _same_as_reference(root, ref_root, monkeypatch)


def test_a_second_run_in_the_same_folder_is_refused_and_nothing_is_corrupted(
    reference, fault, monkeypatch
):
    fault("concurrency", "two make reproduce (and a snakemake by hand) in one folder at once")
    root, _ = reference
    before = _data(root)
    # Both at the same moment; the fine-tuning job is forced to run again so the run lasts.
    first, second = (_start(root, _reproduce("--forcerun", "finetune")) for _ in range(2))
    locks = root / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not any(locks.glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.05)
    by_hand = subprocess.run(
        [str(BIN / "snakemake"), "--workflow-profile", "workflow/profiles/default", "--cores",
         "1", TARGET], cwd=root, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (code1, out1), (code2, out2) = _finish(first), _finish(second)
    outcomes = sorted([(code1, out1), (code2, out2)], key=lambda c: c[0])
    assert outcomes[0][0] == 0, outcomes[0][1][-5000:]
    refused = outcomes[1][1]
    assert outcomes[1][0] != 0 and "vtdl: another `make reproduce` (pid" in refused, refused
    assert "rule finetune" not in refused  # it did nothing
    assert (
        by_hand.returncode != 0 and "Directory cannot be locked" in by_hand.stdout + by_hand.stderr
    )
    assert _data(root) == before
    _outputs_are_whole(root)
    reference = json.loads((root / TARGET).read_text())["metrics"]
    assert reference  # the forced re-run wrote a whole result
    assert not any(locks.glob("*.lock"))  # Snakemake unlocked when the run ended
