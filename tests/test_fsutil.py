"""Atomic writes: a failure never leaves a half file or destroys the previous output."""

import pytest

from vtdl.fsutil import atomic_dir, atomic_write_json, atomic_write_text, sha256_file


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


def test_sha256_file(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
