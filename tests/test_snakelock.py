"""vtdl.snakelock: one run per folder, and a killed run's Snakemake lock removed only when no
Snakemake runs there."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vtdl import snakelock


def _lock_files(folder: Path) -> list[Path]:
    locks = folder / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    files = [locks / "0.input.lock", locks / "0.output.lock"]
    for path in files:
        path.write_text("results/x\n")
    return files


def _run(folder: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vtdl.snakelock", *command],
        cwd=folder, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_killed_runs_lock_is_removed_and_the_command_runs_with_the_run_lock_held(tmp_path):
    files = _lock_files(tmp_path)
    probe = (
        "import fcntl, os, sys; fd = os.open('.snakemake/vtdl-run.lock', os.O_RDWR)\n"
        "try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError: print('held')"
    )
    done = _run(tmp_path, sys.executable, "-c", probe)  # exec'd: the same process holds it
    assert done.returncode == 0, done.stderr
    assert done.stdout == "held\n"
    assert "removed the Snakemake lock a killed run left" in done.stderr
    assert not any(path.exists() for path in files)


def test_a_second_run_is_refused_while_the_first_holds_the_folder(tmp_path):
    (tmp_path / ".snakemake").mkdir()
    with open(tmp_path / ".snakemake" / "vtdl-run.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        done = _run(tmp_path, "touch", "ran")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"vtdl: another `make reproduce` (pid 4242) is running in {tmp_path}: wait for it to "
        "finish (or stop it); this one did nothing"
    )
    assert not (tmp_path / "ran").exists()


def _proc_view(pid: int) -> str:
    """What /proc shows of `pid`, for a failure message."""
    view = []
    for name, read in (("cmdline", lambda p: p.read_bytes()), ("cwd", os.readlink)):
        try:
            view.append(f"{name}={read(Path('/proc', str(pid), name))!r}")
        except OSError as err:
            view.append(f"{name}: {err!r}")
    return ", ".join(view)


@contextlib.contextmanager
def _snakemake_by_hand(folder: Path) -> Iterator[subprocess.Popen]:
    """A process whose command line says snakemake, running in `folder`, once /proc shows it."""
    fake = folder / "snakemake"
    fake.symlink_to(sys.executable)
    live = subprocess.Popen([str(fake), "-c", "import time; time.sleep(60)"], cwd=folder)
    try:
        deadline = time.monotonic() + 10  # seen in /proc once the kernel has exec'd it
        while snakelock._live_snakemake_here(folder) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        yield live
    finally:
        live.kill()
        live.wait()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_the_lock_of_a_snakemake_started_by_hand_is_left_to_snakemake(tmp_path):
    files = _lock_files(tmp_path)
    with _snakemake_by_hand(tmp_path) as live:
        assert snakelock._live_snakemake_here(tmp_path) == live.pid, _proc_view(live.pid)
        done = _run(tmp_path, "true")
    assert done.returncode == 0 and "removed" not in done.stderr
    assert all(path.exists() for path in files)
    assert snakelock._live_snakemake_here(tmp_path) is None


def test_a_missing_command_is_one_line(tmp_path):
    done = _run(tmp_path, str(tmp_path / "no-such-snakemake"))
    assert done.returncode == 127
    assert done.stderr.strip().startswith(f"vtdl: cannot start {tmp_path / 'no-such-snakemake'}:")
    assert os.path.exists(tmp_path / ".snakemake" / "vtdl-run.lock")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_a_snakemake_of_ours_whose_folder_cannot_be_read_counts_as_running_here(
    tmp_path, monkeypatch
):
    real_readlink = os.readlink
    with _snakemake_by_hand(tmp_path) as live:

        def readlink(path, *args, **kwargs):  # as in a container without ptrace rights
            if str(path) == f"/proc/{live.pid}/cwd":
                raise PermissionError(13, "Permission denied", str(path))
            return real_readlink(path, *args, **kwargs)

        monkeypatch.setattr(snakelock.os, "readlink", readlink)
        assert snakelock._live_snakemake_here(tmp_path / "elsewhere") == live.pid
