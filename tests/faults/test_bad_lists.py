"""Bad official split files, injected one at a time into valid UCF101, HMDB51 and Kinetics sets.

Each fault must give one error naming the file and line (the earlier canonical lists stay as
they were), or, for quirks the real files have (a byte-order mark), the same lists as without.
A symlink leading out of the split folder is refused before anything is read.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from split_files import make_hmdb, make_kinetics, make_ucf

from vtdl.data import splits as sp
from vtdl.errors import VtdlError

MAKERS = {"ucf101": make_ucf, "hmdb51": make_hmdb, "kinetics": make_kinetics}


def _append(path: Path, data: bytes) -> None:
    text = path.read_bytes()
    path.write_bytes(text + (b"" if text.endswith((b"\n", b"\r")) else b"\r\n") + data)


def _first_split_file(fmt: str, split_dir: Path) -> Path:
    return {
        "ucf101": split_dir / "trainlist01.txt",
        "hmdb51": split_dir / "brush_hair_test_split1.txt",
        "kinetics": split_dir / "kinetics_400_train.csv",
    }[fmt]


def _line_count(path: Path) -> int:
    return len(path.read_bytes().splitlines())


def _kinetics_row(*fields: str) -> bytes:
    return (",".join(fields) + "\n").encode()


# A fault's mutation(format, split folder, frames) breaks one file and returns (that file, the
# line the error must name, or None).
def _unknown_class(fmt, split_dir, frames):
    path = _first_split_file(fmt, split_dir)
    if fmt == "ucf101":
        _append(path, b"Nonexistent/v_Nonexistent_g01_c01.avi 1")
    elif fmt == "hmdb51":
        for k in (1, 2, 3):  # a complete class, as HMDB51 defines classes by their files
            extra = split_dir / f"nonexistent_test_split{k}.txt"
            extra.write_text("Someone_nonexistent_f_nm_np1_fr_med_0.avi 1 \n")
        return split_dir / "nonexistent_test_split1.txt", 1
    else:
        _append(path, _kinetics_row("no such label", "zz", "1", "11", "train", "0"))
    return path, _line_count(path)


def _appended(rows: dict[str, bytes], names_line: bool = True):
    """A fault that appends one line (`rows[format]`) to the format's first split file."""

    def mutate(fmt, split_dir, frames):
        path = _first_split_file(fmt, split_dir)
        _append(path, rows[fmt])
        return path, _line_count(path) if names_line else None

    return mutate


def _duplicate_line(fmt, split_dir, frames):
    path = _first_split_file(fmt, split_dir)
    lines = path.read_bytes().splitlines()
    _append(path, lines[1 if fmt == "kinetics" else 0])  # (line 1 of the CSV is its header)
    return path, _line_count(path)


def _symlink_outside(fmt, split_dir, frames):
    path = _first_split_file(fmt, split_dir)
    outside = split_dir.parent / "outside" / path.name
    outside.parent.mkdir()
    shutil.move(path, outside)  # a valid file: reading it would succeed
    path.symlink_to(outside)
    return path, None


FAULTS = {
    "unknown class": (_unknown_class, ("class", "in no manifest")),
    "missing video": (
        _appended({
            "ucf101": b"YoYo/v_YoYo_g09_c09.avi 3",
            "hmdb51": b"Never_extracted_brush_hair_f_nm_np1_fr_med_9.avi 1",
            "kinetics": _kinetics_row("zumba", "never_seen", "5", "15", "train", "0"),
        }),
        "in no manifest",
    ),
    "duplicate line": (_duplicate_line, "duplicate"),
    "wrong column count": (
        _appended({
            "ucf101": b"ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 1 extra",
            "hmdb51": b"Brush_hairClip_brush_hair_f_nm_np1_fr_med_0.avi",
            "kinetics": b"abseiling,only_two\n",
        }),
        "",
    ),
    "non-UTF-8 bytes": (
        _appended({
            "ucf101": b"caf\xe9/v_caf\xe9_g01_c01.avi 1",
            "hmdb51": b"caf\xe9.avi 1",
            "kinetics": b"caf\xe9,x,1,2,train,0\n",
        }, names_line=False),  # the error names the byte offset
        "UTF-8",
    ),
    "path with ..": (
        _appended({
            "ucf101": b"../../etc/v_passwd_g01_c01.avi 1",
            "hmdb51": b"../../etc/passwd.avi 1",
            "kinetics": _kinetics_row("../../etc", "passwd", "1", "11", "train", "0"),
        }),
        "",
    ),
    "absolute path": (
        _appended({
            "ucf101": b"/etc/v_passwd_g01_c01.avi 1",
            "hmdb51": b"/etc/passwd.avi 1",
            "kinetics": _kinetics_row("/etc", "passwd", "1", "11", "train", "0"),
        }),
        "",
    ),
    "symlink out of the split folder": (_symlink_outside, "outside the split folder"),
}  # fmt: skip


@pytest.fixture
def dataset(tmp_path, request):
    """A valid official set of `fmt`, its canonical lists built once (the finished work)."""
    fmt = request.param
    split_dir, frames, _ = MAKERS[fmt](tmp_path)
    out = tmp_path / "lists"
    sp.build_splits(fmt, split_dir, frames, out)
    return fmt, split_dir, frames, out


@pytest.mark.parametrize("dataset", sorted(MAKERS), indirect=True)
@pytest.mark.parametrize("name", sorted(FAULTS))
def test_a_bad_split_file_is_one_error_naming_file_and_line(dataset, name, fault):
    fmt, split_dir, frames, out = dataset
    fault("bad split files", name)
    finished = fault.snapshot([out])
    mutate, expected = FAULTS[name]
    path, line = mutate(fmt, split_dir, frames)
    with pytest.raises(VtdlError) as err:
        sp.build_splits(fmt, split_dir, frames, out)
    message = str(err.value)
    assert str(path) in message, message
    if line is not None:
        assert f"line {line}" in message, message
    expected = (expected,) if isinstance(expected, str) else expected
    assert any(text.lower() in message.lower() for text in expected), message
    assert "Traceback" not in message
    fault.intact(finished)


@pytest.mark.parametrize("dataset", sorted(MAKERS), indirect=True)
def test_a_byte_order_mark_is_read_as_the_real_files_have_it(dataset, fault, tmp_path):
    fmt, split_dir, frames, out = dataset
    fault("bad split files", "byte-order mark (read correctly)")
    path = _first_split_file(fmt, split_dir)
    data = path.read_bytes()
    path.write_bytes(b"\xef\xbb\xbf" + data.removeprefix(b"\xef\xbb\xbf"))
    again = tmp_path / "again"
    sp.build_splits(fmt, split_dir, frames, again)
    for listing in sorted(out.rglob("*.csv")):
        twin = again / listing.relative_to(out)
        assert list(csv.reader(twin.open())) == list(csv.reader(listing.open())), listing
