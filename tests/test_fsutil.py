"""Atomic writes: a failure never leaves a half file or destroys the previous output."""

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vtdl import fsutil
from vtdl.errors import VtdlError
from vtdl.fsutil import (
    atomic_dir,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    sha256_file,
    write_failure,
)


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})
    assert target.read_text().strip() == '{\n  "a": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_swaps_whole_directory_only_on_success(tmp_path):
    target = tmp_path / "shard"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("first")
    assert (target / "a").read_text() == "first"

    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["a"]

    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["shard"]


# A writer in its own process, SIGKILLed (or, with "hold", kept alive) inside the block.
_WRITER = """
import os, signal, sys, time
from pathlib import Path
from vtdl.fsutil import atomic_dir, atomic_path
kind, target, how = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
with (atomic_dir if kind == "dir" else atomic_path)(target) as tmp:
    (tmp / "frames" if kind == "dir" else tmp).write_bytes(b"half")
    if how == "hold":
        print("writing", flush=True)
        time.sleep(60)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _writer(kind: str, target: Path, how: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, kind, str(target), how], stdout=subprocess.PIPE, text=True
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_what_a_killed_write_left_is_removed_by_the_next_write_of_that_output(tmp_path, kind):
    write = atomic_dir if kind == "dir" else atomic_path
    target, other = tmp_path / "out.x", tmp_path / "out.x.y"  # `other`: a name `target` begins
    for path in (target, other):
        assert _writer(kind, path, "kill").wait(timeout=60) == -9
    assert len(_leftovers(tmp_path)) == 2 and not target.exists()
    with write(target) as tmp:
        (tmp / "frames" if kind == "dir" else tmp).write_bytes(b"whole")
    # The killed write of this output is gone; the other output's is for its own next write.
    (left,) = _leftovers(tmp_path)
    assert left.startswith(".out.x.y.") and left.endswith(".tmp")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["out.x"]


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_temporary_that_a_live_write_holds_is_kept(tmp_path, kind):
    target = tmp_path / "out"
    holder = _writer(kind, target, "hold")
    try:
        assert holder.stdout.readline() == "writing\n"
        atomic_write_text(tmp_path / "out", "another writer's")  # same output, meanwhile
        (left,) = _leftovers(tmp_path)  # the live one's temporary is untouched
        assert (tmp_path / left / "frames" if kind == "dir" else tmp_path / left).exists()
    finally:
        holder.kill()
        holder.wait()


def test_contents_moved_aside_before_the_swap_are_kept_while_the_output_is_missing(tmp_path):
    target = tmp_path / "shard"
    aside = tmp_path / ".shard.ijklmnop.old"  # killed between moving aside and swapping in
    (aside / "content").mkdir(parents=True)
    (aside / "content" / "frames").write_text("previous")
    with atomic_dir(target) as tmp:
        (tmp / "frames").write_text("new")
    # The previous contents were the last copy while `target` was missing: kept this time.
    assert _leftovers(tmp_path) == [".shard.ijklmnop.old"]
    with atomic_dir(target) as tmp:
        (tmp / "frames").write_text("newer")
    assert _leftovers(tmp_path) == []
    assert (target / "frames").read_text() == "newer"


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_temporary_swept_before_its_writer_locked_it_is_made_again(tmp_path, monkeypatch, kind):
    # Another write of the same output sweeps in the moment between creation and lock.
    target = tmp_path / "out"
    swept = []
    for name in ("mkstemp", "mkdtemp"):
        make = getattr(tempfile, name)

        def make_then_sweep(*args, _make=make, **kwargs):
            made = _make(*args, **kwargs)
            if not swept:
                fsutil._sweep_stale(target)
                swept.append(made)
            return made

        monkeypatch.setattr(tempfile, name, make_then_sweep)
    with (atomic_dir if kind == "dir" else atomic_path)(target) as tmp:
        assert tmp.exists()  # its own, locked: the next sweep leaves it
        fsutil._sweep_stale(target)
        (tmp / "frames" if kind == "dir" else tmp).write_bytes(b"whole")
    monkeypatch.undo()
    assert swept and _leftovers(tmp_path) == []
    assert (target / "frames" if kind == "dir" else target).read_bytes() == b"whole"


def test_sha256_file(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_full_disk_is_one_error_naming_the_file_and_the_previous_file_stays(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(VtdlError) as err, atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(err.value).startswith(f"{target}: cannot write (No space left on device); the disk")
    assert "free space" in str(err.value) and "is kept" in str(err.value)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.EROFS, "is not writable"), (errno.EACCES, "is not writable"), (errno.EIO, "check")],
)
def test_write_failures_say_the_cause(tmp_path, code, words):
    message = str(write_failure(tmp_path / "x" / "f.pt", OSError(code, os.strerror(code))))
    assert message.startswith(f"{tmp_path / 'x' / 'f.pt'}: cannot write ({os.strerror(code)})")
    assert words in message


def test_an_error_reading_another_file_inside_the_block_is_not_called_a_write_error(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out") as tmp:
        tmp.write_text("x")
        (tmp_path / "missing-input").read_text()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_refuses_new_files_is_named(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(VtdlError, match=rf"^{tmp_path}/a: cannot write \(Permission denied\); "):
        atomic_write_text(tmp_path / "a", "x")
    with pytest.raises(VtdlError, match=rf"the folder {tmp_path} is not writable"):
        with atomic_dir(tmp_path / "shard"):
            pass


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_get_the_mode_of_the_umask_not_a_private_one(tmp_path, umask):
    """A group sharing a project (or a web server showing the plots) reads what `open` and
    `mkdir` would have made readable; temporary names are private by default."""
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "table.md", "x\n")
        with atomic_dir(tmp_path / "plots") as tmp:
            (tmp / "a.png").write_bytes(b"png")
    finally:
        os.umask(previous)
    assert (tmp_path / "table.md").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "plots").stat().st_mode & 0o777 == 0o777 & ~umask


def test_contents_being_moved_aside_are_not_swept_by_another_write(tmp_path, monkeypatch):
    # Another write of the same output sweeps while a replacement moves the old folder aside:
    # the aside folder is locked like a temporary, so the swap completes.
    target = tmp_path / "shard"
    with atomic_dir(target) as tmp:
        (tmp / "frames").write_text("old")
    replace = os.replace

    def sweep_then_replace(src, dst):
        fsutil._sweep_stale(target)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", sweep_then_replace)
    with atomic_dir(target) as tmp:
        (tmp / "frames").write_text("new")
    monkeypatch.undo()
    assert (target / "frames").read_text() == "new"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["shard", "a b", "new\nline", "-x.tmp"])
def test_writes_into_a_folder_being_filled_do_not_scan_it(tmp_path, monkeypatch, name):
    # Extraction writes thousands of frame files into one `atomic_dir`: one scan per write
    # would triple its cost, and nothing but this writer's own files can be in there.
    scanned = []
    scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: scanned.append(path) or scandir(path))
    with atomic_dir(tmp_path / name) as tmp:
        for i in range(3):
            atomic_write_text(tmp / f"{i}.frames", "x")
    assert scanned == [tmp_path]  # the output's own folder, once
