"""GPU slots on one machine, on the CPU: a faked four-GPU device list and real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vtdl import gpuslots
from vtdl.errors import VtdlError

# A job: hold `count` GPUs, report what it sees, then live until told to stop (or killed).
_JOB = """
import json, os, sys, time
from vtdl import gpuslots
held = gpuslots.hold(int(sys.argv[1]))
out = sys.argv[2]
with open(out + ".tmp", "w") as f:
    json.dump({"held": held, "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}, f)
os.replace(out + ".tmp", out)
while not os.path.exists(sys.argv[3]):
    time.sleep(0.05)
"""


@pytest.fixture
def machine(tmp_path, monkeypatch):
    env = {**os.environ, "VTDL_GPU_DEVICES": "0,1,2,3", "VTDL_GPU_LOCK_DIR": str(tmp_path)}
    for key in ("VTDL_GPU_DEVICES", "VTDL_GPU_LOCK_DIR"):
        monkeypatch.setenv(key, env[key])
    return env


def _start(env, tmp_path: Path, name: str, count: int = 1) -> tuple[subprocess.Popen, Path]:
    report = tmp_path / f"{name}.json"
    job = subprocess.Popen(
        [sys.executable, "-c", _JOB, str(count), str(report), str(tmp_path / "stop")], env=env
    )
    return job, report


def _wait_for(path: Path, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_four_concurrent_jobs_hold_four_different_devices_and_a_killed_one_frees_its_slot(
    machine, tmp_path
):
    jobs = [_start(machine, tmp_path, f"job{i}") for i in range(4)]
    seen = [_wait_for(report) for _, report in jobs]
    assert sorted(s["held"][0] for s in seen) == ["0", "1", "2", "3"]  # no two share a device
    assert all(s["visible"] == s["held"][0] for s in seen)  # each sees only its own device

    fifth, fifth_report = _start(machine, tmp_path, "fifth")
    time.sleep(1.5)
    assert not fifth_report.exists()  # every slot is busy: it waits
    victim, victim_report = jobs[2]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert _wait_for(fifth_report)["held"] == json.loads(victim_report.read_text())["held"]

    (tmp_path / "stop").touch()
    for job, _ in [*jobs, (fifth, fifth_report)]:
        job.wait(timeout=30)


def test_a_job_asking_for_two_gets_two_distinct_devices(machine, tmp_path):
    job, report = _start(machine, tmp_path, "pair", count=2)
    held = _wait_for(report)["held"]
    assert len(set(held)) == 2 and _wait_for(report)["visible"] == ",".join(held)
    (tmp_path / "stop").touch()
    job.wait(timeout=30)


def test_no_gpu_holds_nothing_and_asking_for_too_many_is_refused(monkeypatch, machine):
    with pytest.raises(VtdlError, match=r"--gpus 5: this machine has 4 GPU\(s\)"):
        gpuslots.hold(5)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("VTDL_GPU_DEVICES", "")
    assert gpuslots.devices() == [] and gpuslots.hold(1) == []
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # a CPU job's environment is untouched


def test_waiting_for_a_busy_machine_can_time_out_with_a_clear_error(machine, tmp_path):
    jobs = [_start(machine, tmp_path, f"job{i}") for i in range(4)]
    for _, report in jobs:
        _wait_for(report)
    with pytest.raises(VtdlError, match=r"--gpus 1: no 1 free GPU\(s\) within 1 s"):
        gpuslots.hold(1, timeout_s=1)
    (tmp_path / "stop").touch()
    for job, _ in jobs:
        job.wait(timeout=30)


def test_several_gpus_for_a_stage_that_cannot_run_data_parallel_is_one_clear_error(
    tmp_path, monkeypatch, capsys
):
    from vtdl.cli import main

    monkeypatch.setenv("VTDL_GPU_DEVICES", "0,1")
    monkeypatch.setenv("VTDL_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # hold() sets it; restored afterwards
    argv = ["features", "--gpus", "2", "--encoder", "none", "--backbone", "small3d", "--seed",
            "0", "--dataset", "x", "--split", "1", "--lists", str(tmp_path), "--frames",
            str(tmp_path), "--out", str(tmp_path / "f.npz")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "vtdl features: error: --gpus 2: only pretrain and finetune run on several GPUs; "
        "give `vtdl features` --gpus 1"
    ]
