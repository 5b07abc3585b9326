"""Atomic writes, checksums, and the data-root boundary.

Every output of the pipeline is written under a temporary name in the same directory and then
renamed into place, so a killed job never leaves a half-written file where an output should be.
What a SIGKILL leaves beside it instead (the temporary file or folder, or the previous contents a
replacement had moved aside) is removed by the next write of the same output (`_sweep_stale`).
A write that fails (disk full, a file size limit, a read-only folder) raises one VtdlError
naming the file and the cause (`write_failure`), and the previous file stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vtdl.errors import VtdlError

_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)

# What `tempfile.mkstemp`/`mkdtemp` add to prefix ".<name>." before our suffixes: 8 characters
# of [a-z0-9_] (so no other output's temporary, whose name goes on after a dot, matches).
_RANDOM = r"[a-z0-9_]{8}"
_LEFTOVER = re.compile(_RANDOM + r"\.(tmp|old)")  # after the prefix
_IN_TEMPORARY = re.compile(r"\..+\." + _RANDOM + r"\.tmp", re.DOTALL)  # a whole name


def write_failure(path: str | os.PathLike, err: BaseException) -> VtdlError:
    """One error for a failed write of `path`: the cause in words and what to do.

    `err` is the OSError of the write, or the RuntimeError torch raises for it (which says
    nothing of the cause: then the disk's free space and the file size limit are looked up).
    """
    path = Path(path)
    code = err.errno if isinstance(err, OSError) else None
    reason = (err.strerror if isinstance(err, OSError) else None) or "the write failed"
    free = None
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free
    limit = None
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        limit = None if soft == resource.RLIM_INFINITY else soft
    if code in _NOT_WRITABLE:
        hint = f"the folder {path.parent} is not writable: make it writable (or choose another)"
    elif code in _NO_SPACE or (code is None and free is not None and free < 1 << 20):
        hint = f"the disk is full ({free if free is not None else '?'} bytes free): free space"
    elif code == errno.EFBIG or (code is None and limit is not None):
        hint = f"files are limited to {limit} bytes here (ulimit -f): raise the limit"
    else:
        hint = "check the disk and the folder"
    return VtdlError(
        f"{path}: cannot write ({reason}); {hint}, then re-run (the previous {path.name}, if "
        "any, is kept as it was)"
    )


def check_writable(output: str | os.PathLike) -> None:
    """Refuse now, naming `output` in `write_failure`'s words, when its folder takes no file: a
    job that writes its first output after an epoch of work should not find out then."""
    output = Path(output)
    probe = output.with_name(f".{output.name}.probe-{os.getpid()}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as err:
        raise write_failure(output, err) from None
    probe.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read where Linux shows it (setting it to read it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_temporary(path: Path, suffix: str, folder: bool) -> tuple[Path, int]:
    """Create `.<name>.<8 random characters><suffix>` beside `path` and hold an exclusive lock
    on it until the returned descriptor is closed (or the process dies): the lock tells
    `_sweep_stale` that it is being written.

    Another write's sweep may take the temporary in the moment between its creation and the
    lock (it holds the lock while it removes it): then it is no longer at its path, and another
    is made. Where the file system refuses locks (some network file systems), nothing is locked
    and nothing is swept.
    """
    prefix = f".{path.name}."
    while True:
        if folder:
            name = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent)
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # swept before it was opened
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
        with contextlib.suppress(OSError):  # waits only while a sweep removes it
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            mine = os.path.samestat(os.fstat(fd), os.stat(name, follow_symlinks=False))
        except FileNotFoundError:
            mine = False
        if mine:
            return Path(name), fd
        os.close(fd)


def _remove_if_abandoned(path: str) -> None:
    """Remove the temporary `path` when no live process holds its lock, holding the lock
    meanwhile (so a writer that created it a moment ago finds it gone and makes another)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a symbolic link is not ours
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held (EWOULDBLOCK), or locks unsupported here
            return
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        os.close(fd)


def _sweep_stale(path: Path) -> None:
    """Remove what a killed earlier write of `path` left in its folder: temporaries no live
    writer holds, and the previous contents an `atomic_dir` replacement had moved aside (only
    once `path` is back in place: until then they are the last copy)."""
    if _IN_TEMPORARY.fullmatch(path.parent.name):
        return  # an `atomic_dir` being filled: one writer, and its leftovers go with it
    prefix = f".{path.name}."
    try:
        with os.scandir(path.parent) as listing:
            entries = [e for e in listing if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        match = _LEFTOVER.fullmatch(entry.name[len(prefix) :])
        if match is None or (match.group(1) == "old" and not path.exists()):
            continue
        _remove_if_abandoned(entry.path)


def _start_write(path: str | os.PathLike, folder: bool) -> tuple[Path, Path, int]:
    """(path, its new locked temporary, the lock's descriptor), after removing what killed
    writes of `path` left beside it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(path)
        tmp, fd = _new_temporary(path, ".tmp", folder=folder)
    except OSError as err:
        raise write_failure(path, err) from None
    return path, tmp, fd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    Creating the temporary file or renaming it raises `write_failure`'s VtdlError; so do the
    OSErrors of writing to it that the block lets through with `errno` set (disk full, size
    limit, permissions), unless the error names another file (one the block was reading).
    """
    # The lock is held until the rename: the block writes through its own handles.
    path, tmp, fd = _start_write(path, folder=False)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's file is private; `open` would give this
        try:
            yield tmp
        except OSError as err:
            if err.errno is None or err.filename not in (None, str(tmp), tmp):
                raise
            raise write_failure(path, err) from None
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise write_failure(path, err) from None
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to `path`; swap it in for `path` only on success.

    An existing `path` is replaced as a whole (moved aside, then deleted) only after the new
    directory is complete, so a failure keeps the old contents intact.
    """
    path, tmp, fd = _start_write(path, folder=True)
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; mkdir's mode instead
        yield tmp
        _swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)


def _swap_in(new: Path, path: Path) -> None:
    """Put the complete folder `new` in place of `path`. An existing `path` is moved aside
    (locked, so no sweep takes it) and deleted only after the swap; put back if the swap fails."""
    try:
        if not path.exists():
            os.replace(new, path)
            return
        old, fd = _new_temporary(path, ".old", folder=True)
    except OSError as err:
        raise write_failure(path, err) from None
    try:
        os.replace(path, old / "content")
        os.replace(new, path)
    except OSError as err:
        if not path.exists():
            with contextlib.suppress(OSError):
                os.replace(old / "content", path)
        raise write_failure(path, err) from None
    finally:
        if path.exists():  # the new contents, or the previous put back: the aside is spare
            shutil.rmtree(old, ignore_errors=True)
        os.close(fd)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def escapes(path: Path, root: Path) -> Path | None:
    """Where `path` really leads when a symlink takes it outside `root`; None if it stays in.

    Data sets are read only inside their root: a link to /etc or a home folder in a videos or
    split folder must not be read as data.
    """
    target = path.resolve()
    return None if target.is_relative_to(root.resolve()) else target
