"""One Snakemake run per project folder, and no manual `--unlock` after a killed one.

`make reproduce` starts Snakemake through `python -m vtdl.snakelock <snakemake command...>`:

1. It takes an exclusive lock on `.snakemake/vtdl-run.lock` (`flock`, which the kernel releases
   when the run ends, however it ends). A second `make reproduce` in the same folder is refused
   at once with one line; the running one is not disturbed.
2. With that lock held, Snakemake's own lock files (`.snakemake/locks/`) can only be left over
   from a run that was killed (SIGKILL, the OOM killer, a power cut), which Snakemake cannot
   tell from a live run: it refuses with `LockException` until someone runs `--unlock`. They
   are removed, with a note, unless a Snakemake started by hand still runs in this folder
   (looked up in /proc; where there is no /proc they are left to Snakemake's own check).
3. A plain run whose project has not changed since Snakemake last found nothing to do ends
   here, saying so (`vtdl.uptodate`).
4. Otherwise it becomes the Snakemake command (exec: same process, signals and exit status),
   with the lock's file descriptor kept open, so the lock lasts exactly as long as the run.

A killed run's jobs are then re-run by Snakemake itself (`rerun-incomplete` in the profile);
the stages resume from their checkpoints.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from vtdl import uptodate

LOCK = Path(".snakemake") / "vtdl-run.lock"
SNAKEMAKE_LOCKS = Path(".snakemake") / "locks"


def _live_snakemake_here(folder: Path) -> int | None:
    """The pid of another process running Snakemake in `folder` (its working directory, or
    named on its command line), None if there is none, -1 if there is no /proc to look in."""
    proc = Path("/proc")
    if not proc.is_dir():
        return -1  # unknown: assume one runs
    here = str(folder.resolve())
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            owner = entry.stat().st_uid
        except OSError:  # gone meanwhile
            continue
        words = [a.decode("utf-8", "replace") for a in argv if a]
        if not any(Path(w).name.startswith("snakemake") for w in words[:3]):
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except FileNotFoundError:  # gone meanwhile
            continue
        except OSError:
            # A Snakemake whose working directory we may not read (a container without
            # ptrace rights, hidepid). Ours could be running here: leave the locks to
            # Snakemake's own check. Another user's cannot hold locks in our folder.
            if owner == os.getuid():
                return int(entry.name)
            continue
        if cwd == here or here in words:
            return int(entry.name)
    return None


def _remove_stale_locks(folder: Path) -> None:
    locks = folder / SNAKEMAKE_LOCKS
    stale = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    if not stale or _live_snakemake_here(folder) is not None:
        return  # none, or a run started by hand holds them: Snakemake will refuse, as it should
    for path in stale:
        path.unlink(missing_ok=True)
    print(
        f"vtdl: removed the Snakemake lock a killed run left in {locks} (no Snakemake runs "
        "here); its unfinished jobs run again",
        file=sys.stderr,
    )


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m vtdl.snakelock SNAKEMAKE [OPTIONS...]", file=sys.stderr)
        return 2
    folder = Path.cwd()
    (folder / LOCK).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
        print(
            f"vtdl: another `make reproduce` (pid {holder}) is running in {folder}: wait for it "
            f"to finish (or stop it); this one did nothing",
            file=sys.stderr,
        )
        return 1
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # exec keeps the pid: the run's own
    _remove_stale_locks(folder)
    if uptodate.answer(argv, folder):  # a no-op, known without Snakemake's 2 s (vtdl.uptodate)
        return 0
    os.set_inheritable(fd, True)  # the lock lives as long as the Snakemake run
    try:
        os.execvp(argv[0], argv)
    except OSError as err:
        print(f"vtdl: cannot start {argv[0]}: {err.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
