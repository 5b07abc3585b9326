"""One machine's GPUs shared by concurrent jobs: each job holds its own devices while it runs.

Snakemake counts a `gpu` resource but hands out no device ids, so four jobs on a four-GPU
machine would all train on cuda:0. A job that asks for N GPUs takes N free slots here: one lock
file per device, locked with `filelock` (an OS file lock, released when the process ends in any
way, SIGKILL included, so a killed job never keeps its slot), and it sees only those devices
(`CUDA_VISIBLE_DEVICES`, set before torch initialises CUDA).

Devices: `VTDL_GPU_DEVICES` (comma-separated ids; also how tests fake a four-GPU machine), else
the GPUs `nvidia-smi -L` lists, else none (the job runs on the CPU and holds nothing).
Lock files: `VTDL_GPU_LOCK_DIR`, default `<temp dir>/vtdl-gpu-slots-<uid>` (one per machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

from vtdl.errors import VtdlError

_HELD: list[FileLock] = []  # kept for the life of the process
_POLL_S = 0.5


def devices() -> list[str]:
    """The machine's GPU ids, as CUDA_VISIBLE_DEVICES names them."""
    given = os.environ.get("VTDL_GPU_DEVICES")
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def _lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"vtdl-gpu-slots-{os.getuid()}"
    folder = Path(os.environ.get("VTDL_GPU_LOCK_DIR") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def hold(count: int, timeout_s: float | None = None) -> list[str]:
    """Take `count` free GPUs for the rest of this process; waits while all are busy.

    Returns the device ids held (empty when the machine has no GPU) and sets
    CUDA_VISIBLE_DEVICES to them, so `cuda:0` is this job's first own device.

    Raises:
        VtdlError: more GPUs asked for than the machine has, or none freed within `timeout_s`.
    """
    available = devices()
    if count <= 0 or not available:
        return []
    if count > len(available):
        raise VtdlError(
            f"--gpus {count}: this machine has {len(available)} GPU(s) ({', '.join(available)})"
        )
    folder, deadline, waited = _lock_dir(), None, False
    if timeout_s is not None:
        deadline = time.monotonic() + timeout_s
    while True:
        taken: list[tuple[str, FileLock]] = []
        for device in available:
            lock = FileLock(folder / f"gpu{device}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            taken.append((device, lock))
            if len(taken) == count:
                _HELD.extend(lock for _, lock in taken)
                held = [device for device, _ in taken]
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(held)
                return held
        for _, lock in taken:  # not enough free: give back the partial set, wait, retry
            lock.release()
        if deadline is not None and time.monotonic() > deadline:
            raise VtdlError(f"--gpus {count}: no {count} free GPU(s) within {timeout_s:g} s")
        if not waited:
            print(f"vtdl: waiting for {count} free GPU(s) of {len(available)}", file=sys.stderr)
            waited = True
        time.sleep(_POLL_S)
