"""`vtdl splits`: the untouched official split files -> canonical train/test lists.

Reads UCF101's `ucfTrainTestlist/`, HMDB51's `testTrainMulti_7030_splits/` or Kinetics-400's split
CSVs exactly as the data sets ship them, joins every listed video with its frame count from the
extraction manifests, and writes (as one atomic directory):

    OUT/classes.csv                        label,class         (0-based labels, sorted by label)
    OUT/split{k}/train.csv, test.csv       path,label,class,frames   (sorted by path)
    OUT/dropped.csv                        path,reason         (listed videos left out, if any)

Paths stay exactly as the official files write them (relative to the videos root), except where
a listed path only matches an extracted video case-insensitively: then the extracted path is
used, because that is the file that exists. Videos that extraction skipped (`--on-error skip`)
are dropped and reported; videos that were never extracted are an error unless
`--on-missing skip` (normal for Kinetics, whose YouTube videos disappear over time).

Every problem in the user's files is reported as one `VtdlError` naming file and line; problems
of one pass are collected and listed together so one run shows all of them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vtdl.errors import VtdlError
from vtdl.fsutil import atomic_dir, escapes
from vtdl.names import (
    CLASSES_FILE,
    CLASSES_HEADER,
    DROPPED_FILE,
    DROPPED_HEADER,
    LIST_HEADER,
    LIST_PARTS,
    split_list,
)
from vtdl.progress import progress

FORMATS = ("ucf101", "hmdb51", "kinetics")
ON_MISSING = ("error", "skip")
MAX_LISTED = 20  # problems shown in one error message; the rest are counted
MAX_WARNED = 5  # paths shown in a warning; dropped.csv has all of them


@dataclass(frozen=True)
class ListedVideo:
    """One video as an official split file lists it.

    `path` is relative to the videos root; `alternatives` are other paths the same video may have
    on disk (Kinetics: `val/` or `validate/`, class folder with spaces or underscores).
    `source` and `line` (1-based; None for videos found from folders) locate it for messages.
    """

    path: str
    class_name: str
    source: str
    line: int | None
    alternatives: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return _where(self.source, self.line)

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.path, *self.alternatives)


# split number -> (train videos, test videos)
SplitLists = dict[int, tuple[list[ListedVideo], list[ListedVideo]]]


@dataclass(frozen=True)
class Manifests:
    """What extraction produced: frame counts, skipped videos and the manifest naming each."""

    frames: dict[str, int]
    skipped: dict[str, str]
    origin: dict[str, Path]
    files: list[Path]


# --------------------------------------------------------------------------------------------
# Shared helpers: messages, line reading, path checks.


def _where(source: str | Path, line: int | None) -> str:
    return f"{source} line {line}" if line is not None else str(source)


def _listing(head: str, entries: list[str], limit: int = MAX_LISTED) -> str:
    """`head` and up to `limit` indented entries, then how many were left out."""
    shown = "".join(f"\n  {entry}" for entry in entries[:limit])
    more = f"\n  ... and {len(entries) - limit} more" if len(entries) > limit else ""
    return f"{head}:{shown}{more}"


class _Problems:
    """Collects the problems of one pass so a single error lists all of them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.entries.append(f"{where}: {message}")

    def raise_if_any(self, hint: str = "") -> None:
        if not self.entries:
            return
        if len(self.entries) == 1:
            text = self.entries[0]
        else:
            text = _listing(f"{len(self.entries)} {self.kind}", self.entries)
        raise VtdlError(text + (f"\n{hint}" if hint else ""))


def _warn(message: str) -> None:
    print(f"vtdl splits: warning: {message}", file=sys.stderr)


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a split file as (1-based line number, text without outer whitespace).

    Tolerates what the official files and their copies contain: CRLF or CR line ends, a UTF-8
    byte-order mark, trailing spaces (every HMDB51 line has one) and blank lines.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise VtdlError(f"{path}: cannot read split file: {err.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise VtdlError(f"{path}: not UTF-8 text (bad byte at offset {err.start})") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line]
    if not lines:
        raise VtdlError(f"{path}: empty split file")
    return lines


def _has_control(text: str) -> bool:
    """A control character (a newline, a tab, ...): no class name may hold one, as every list,
    log line and Snakemake file pattern is one line per name."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", text) is not None


def _path_problem(path: str) -> str | None:
    """Why `path` is not a clean path relative to the videos root, or None if it is."""
    if "\\" in path:
        return f"backslash in path {path!r} (split files use '/')"
    if path.startswith("/") or re.match(r"[A-Za-z]:/", path):  # ':' alone is a legal name char
        return f"absolute path {path!r} (must be relative to the videos root)"
    parts = path.split("/")
    if ".." in parts:
        return f"path {path!r} escapes the videos root"
    if "" in parts or "." in parts:
        return f"path {path!r} is not a clean relative path"
    return None


def _official_dir(splits_dir: Path, subdir: str, looks_right: Callable[[Path], bool]) -> Path:
    """`splits_dir`, or its `subdir` where the official archive unpacked one level deeper."""
    if not splits_dir.is_dir():
        raise VtdlError(f"{splits_dir}: split-file directory not found")
    nested = splits_dir / subdir
    if not looks_right(splits_dir) and nested.is_dir() and looks_right(nested):
        return nested
    return splits_dir


def _check_lists(problems: _Problems, train: list[ListedVideo], test: list[ListedVideo]) -> None:
    """Report a video listed twice in one list, or in both the train and test list of a split."""
    first_in: dict[str, dict[str, ListedVideo]] = {}
    for name, items in (("train", train), ("test", test)):
        first = first_in.setdefault(name, {})
        for item in items:
            if item.path in first:
                problems.add(item.where, f"duplicate of {first[item.path].where}: {item.path!r}")
            else:
                first[item.path] = item
    for path, item in first_in["test"].items():
        if path in first_in["train"]:
            other = first_in["train"][path].where
            problems.add(item.where, f"{path!r} is also listed for training ({other})")


# --------------------------------------------------------------------------------------------
# UCF101: ucfTrainTestlist/classInd.txt, trainlist0k.txt, testlist0k.txt


def _read_class_ind(path: Path) -> list[str]:
    """Class names in label order from `classInd.txt` (`<1-based id> <class>` per line)."""
    if not path.is_file():
        raise VtdlError(f"{path}: missing (UCF101 class index, lines '1 ApplyEyeMakeup')")
    problems = _Problems("problems in the UCF101 class index")
    by_id: dict[int, tuple[str, int]] = {}
    line_of_name: dict[str, int] = {}
    for n, line in _read_lines(path):
        fields = line.split()
        if len(fields) > 2 and _is_int(fields[0]):
            name = line.split(maxsplit=1)[1]
            problems.add(
                _where(path, n),
                f"class {name!r} holds whitespace, which UCF101's split files (fields "
                "separated by spaces) cannot name: rename its folder and its lines",
            )
            continue
        if len(fields) != 2 or not _is_int(fields[0]):
            problems.add(_where(path, n), f"expected '<class id> <class>', got {line!r}")
            continue
        class_id, name = int(fields[0]), fields[1]
        if class_id in by_id:
            problems.add(
                _where(path, n), f"class id {class_id} already used on line {by_id[class_id][1]}"
            )
        elif name in line_of_name:
            problems.add(
                _where(path, n), f"class {name!r} already listed on line {line_of_name[name]}"
            )
        else:
            by_id[class_id] = (name, n)
            line_of_name[name] = n
    problems.raise_if_any()
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise VtdlError(
            f"{path}: class ids must be 1..{len(by_id)} without gaps, got {sorted(by_id)[:5]}..."
        )
    return [by_id[class_id][0] for class_id in range(1, len(by_id) + 1)]


def _parse_ucf_list(
    path: Path, classes: list[str], with_label: bool, problems: _Problems
) -> list[ListedVideo]:
    """Videos of a trainlist (`<class>/<file> <id>`) or testlist (`<class>/<file>`).

    The class comes from the FOLDER, never from the file name: UCF101's folder
    `HandstandPushups` holds `v_HandStandPushups_*` files.
    """
    ids = {name: i + 1 for i, name in enumerate(classes)}
    expected = "'<class>/<file> <class id>'" if with_label else "'<class>/<file>'"
    # Test lists carry no id; one that does (some copies add it) is checked like a train line.
    allowed_fields = (2,) if with_label else (1, 2)
    items = []
    for n, line in _read_lines(path):
        where = _where(path, n)
        fields = line.split()
        if len(fields) not in allowed_fields:
            problems.add(where, f"expected {expected}, got {line!r}")
            continue
        rel = fields[0]
        bad = _path_problem(rel)
        if bad is None and len(rel.split("/")) != 2:
            bad = f"expected {expected}, path {rel!r} has no single class folder"
        if bad is not None:
            problems.add(where, bad)
            continue
        folder = rel.split("/")[0]
        if folder not in ids:
            problems.add(where, f"unknown class {folder!r} (not in classInd.txt)")
            continue
        if len(fields) == 2:
            if not _is_int(fields[1]):
                problems.add(where, f"class id {fields[1]!r} is not an integer")
                continue
            class_id = int(fields[1])
            if class_id not in range(1, len(classes) + 1):
                problems.add(
                    where, f"unknown class id {class_id} (classInd.txt has 1..{len(classes)})"
                )
                continue
            if class_id != ids[folder]:
                problems.add(
                    where,
                    f"class id {class_id} ({classes[class_id - 1]}) disagrees "
                    f"with folder {folder!r} (id {ids[folder]} in classInd.txt)",
                )
                continue
        items.append(ListedVideo(rel, folder, str(path), n))
    return items


def parse_ucf101(splits_dir: str | Path) -> tuple[list[str], SplitLists]:
    """Classes (index = 0-based label) and split lists from UCF101's `ucfTrainTestlist/`.

    `splits_dir` is that folder or its parent. A split k is present when both
    `trainlist0k.txt` and `testlist0k.txt` exist. Raises VtdlError naming file and line.
    """
    root = _official_dir(
        Path(splits_dir), "ucfTrainTestlist", lambda d: (d / "classInd.txt").is_file()
    )
    classes = _read_class_ind(root / "classInd.txt")
    problems = _Problems("problems in the UCF101 split files")
    splits: SplitLists = {}
    for k in (1, 2, 3):
        train_file, test_file = root / f"trainlist0{k}.txt", root / f"testlist0{k}.txt"
        present = [p for p in (train_file, test_file) if p.is_file()]
        if len(present) == 1:
            _warn(f"ignoring split {k}: {present[0]} has no partner file")
        if len(present) != 2:
            continue
        train = _parse_ucf_list(train_file, classes, True, problems)
        test = _parse_ucf_list(test_file, classes, False, problems)
        _check_lists(problems, train, test)
        splits[k] = (train, test)
    problems.raise_if_any()
    if not splits:
        raise VtdlError(f"{root}: no UCF101 split (trainlist0k.txt with testlist0k.txt, k=1..3)")
    return classes, splits


# --------------------------------------------------------------------------------------------
# HMDB51: testTrainMulti_7030_splits/<class>_test_split<k>.txt, lines `<name>.avi <code>`

_HMDB_FILE = re.compile(r"(?P<cls>.+)_test_split(?P<k>\d+)\.txt", re.DOTALL)
_HMDB_CODES = {"0": None, "1": "train", "2": "test"}  # 0 = in neither list this split


def _hmdb_files(root: Path) -> dict[tuple[str, int], Path]:
    files = {}
    for path in sorted(root.iterdir()):
        match = _HMDB_FILE.fullmatch(path.name)
        if match and path.is_file():
            if _has_control(match["cls"]):
                raise VtdlError(
                    f"{path}: class {match['cls']!r} holds a control character (a newline?): "
                    "rename the class folder and this file"
                )
            files[(match["cls"], int(match["k"]))] = path
    return files


def parse_hmdb51(splits_dir: str | Path) -> tuple[list[str], SplitLists]:
    """Classes (index = 0-based label) and split lists from HMDB51's split files.

    `splits_dir` is `testTrainMulti_7030_splits/` or its parent. Code 1 = train, 2 = test,
    0 = unused. Every class needs a file for each split present. Raises VtdlError.
    """
    root = _official_dir(
        Path(splits_dir), "testTrainMulti_7030_splits", lambda d: bool(_hmdb_files(d))
    )
    files = _hmdb_files(root)
    if not files:
        raise VtdlError(f"{root}: no HMDB51 split files '<class>_test_split<k>.txt'")
    splits_present = sorted({k for _, k in files})
    class_set = {name for name, _ in files}
    missing = [
        str(root / f"{name}_test_split{k}.txt")
        for name in sorted(class_set)
        for k in splits_present
        if (name, k) not in files
    ]
    if missing:
        raise VtdlError(
            _listing(
                f"{len(missing)} HMDB51 split file(s) missing (each class "
                f"needs one per split {splits_present})",
                missing,
            )
        )
    # Official ids follow the sorted FILE names, not the sorted class names: '_' < 't' puts
    # `sword_exercise_test_split1.txt` before `sword_test_split1.txt` (likewise climb_stairs,
    # kick_ball), while sorted class names would put `sword` first.
    first_split = splits_present[0]
    file_names = sorted(files[(name, first_split)].name for name in class_set)
    classes = [_HMDB_FILE.fullmatch(name)["cls"] for name in file_names]  # type: ignore[index]

    problems = _Problems("problems in the HMDB51 split files")
    splits: SplitLists = {}
    for k in splits_present:
        lists: dict[str, list[ListedVideo]] = {"train": [], "test": []}
        for class_name in classes:
            path = files[(class_name, k)]
            for n, line in _read_lines(path):
                # rsplit: the code is the last field, whatever the name holds
                fields = line.rsplit(maxsplit=1)
                if len(fields) != 2:
                    problems.add(_where(path, n), f"expected '<name>.avi <0|1|2>', got {line!r}")
                    continue
                name, code = fields
                if code not in _HMDB_CODES:
                    why = "is not an integer" if not _is_int(code) else "is not 0, 1 or 2"
                    problems.add(
                        _where(path, n), f"code {code!r} {why} (0 unused, 1 train, 2 test)"
                    )
                    continue
                bad = _path_problem(name)
                if bad is None and "/" in name:
                    bad = f"{name!r} is not a plain file name"
                if bad is not None:
                    problems.add(_where(path, n), bad)
                    continue
                which = _HMDB_CODES[code]
                if which is not None:
                    lists[which].append(
                        ListedVideo(f"{class_name}/{name}", class_name, str(path), n)
                    )
        _check_lists(problems, lists["train"], lists["test"])
        splits[k] = (lists["train"], lists["test"])
    problems.raise_if_any()
    return classes, splits


# --------------------------------------------------------------------------------------------
# Kinetics-400: split CSVs `label,youtube_id,time_start,time_end,split[,is_cc]`

# kinetics_400_train.csv (also kinetics-400_ / kinetics400_), train.csv; val: val or validate
_K_TRAIN_CSV = re.compile(r"(kinetics[-_]?400_)?train\.csv")
_K_VAL_CSV = re.compile(r"(kinetics[-_]?400_)?(val|validate)\.csv")
_K_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
_K_VAL_FOLDERS = ("val", "validate")


def _pick_csv(root: Path, csvs: list[Path], pattern: re.Pattern[str], names: str) -> Path:
    matches = [p for p in csvs if pattern.fullmatch(p.name)]
    if len(matches) != 1:
        problem = "no" if not matches else "more than one"
        raise VtdlError(
            f"{root}: {problem} Kinetics split CSV named {names}; "
            f"found {[p.name for p in matches or csvs]}"
        )
    return matches[0]


def _seconds(text: str) -> int | None:
    """Whole seconds from '4' or '4.0'; None for anything else."""
    text = text.strip()
    if _is_int(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _read_kinetics_csv(
    path: Path, split_folders: tuple[str, ...], problems: _Problems
) -> list[ListedVideo]:
    """Videos of one Kinetics CSV as `<split>/<class>/<id>_<start:06d>_<end:06d>.mp4`."""
    rows: list[tuple[int, list[str]]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            for row in reader:
                rows.append((reader.line_num, row))  # line_num: physical line the row ends on
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise VtdlError(f"{path}: cannot read CSV: {err}") from None
    rows = [(n, row) for n, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise VtdlError(f"{path}: empty split file")
    header_line, header = rows[0]
    columns = [name.strip().lower() for name in header]
    lacking = [name for name in _K_COLUMNS if name not in columns]
    if lacking:
        raise VtdlError(
            f"{_where(path, header_line)}: header lacks {lacking}; expected "
            f"'label,youtube_id,time_start,time_end,split'"
        )
    index = {name: columns.index(name) for name in _K_COLUMNS}
    items = []
    for n, row in rows[1:]:
        where = _where(path, n)
        if len(row) != len(columns):
            problems.add(where, f"expected {len(columns)} fields, got {len(row)}: {row!r}")
            continue
        label = row[index["label"]].strip()
        youtube_id = row[index["youtube_id"]].strip()
        start, end = (_seconds(row[index[key]]) for key in ("time_start", "time_end"))
        if not label or "/" in label or "\\" in label or _has_control(label):
            problems.add(
                where,
                f"bad class label {label!r} (a label is a folder name: no '/', '\\' or "
                "control character such as a newline)",
            )
        elif not youtube_id or _path_problem(youtube_id) or "/" in youtube_id:
            problems.add(where, f"bad youtube_id {youtube_id!r}")
        elif start is None or end is None:
            problems.add(where, "time_start/time_end are not whole seconds")
        else:
            file_name = f"{youtube_id}_{start:06d}_{end:06d}.mp4"
            # Folders are the label itself or the label with '_' for ' ': accept both.
            folders = dict.fromkeys((label, label.replace(" ", "_")))
            paths = [
                f"{split}/{folder}/{file_name}" for split in split_folders for folder in folders
            ]
            items.append(ListedVideo(paths[0], label, str(path), n, tuple(paths[1:])))
    return items


def _kinetics_from_folders(manifests: Manifests) -> tuple[list[str], SplitLists]:
    """Split 1 from the extracted `train/<class>/` and `val/<class>/` folders (class = folder)."""
    lists: dict[str, list[ListedVideo]] = {"train": [], "test": []}
    for path in sorted(set(manifests.frames) | set(manifests.skipped)):
        parts = path.split("/")
        if len(parts) != 3:
            continue
        which = "train" if parts[0] == "train" else "test" if parts[0] in _K_VAL_FOLDERS else None
        if which is not None and _has_control(parts[1]):
            raise VtdlError(
                f"{manifests.origin[path]}: class folder {parts[1]!r} holds a control character "
                "(a newline?): rename it"
            )
        if which is not None:
            lists[which].append(ListedVideo(path, parts[1], str(manifests.origin[path]), None))
    if not lists["train"]:
        raise VtdlError(
            "no Kinetics split CSVs, and no extraction manifest lists a 'train/<class>/<video>'"
        )
    classes = sorted({item.class_name for item in lists["train"]})
    problems = _Problems("validation classes without training videos")
    for item in lists["test"]:
        if item.class_name not in classes:
            problems.add(
                item.where,
                f"class folder {item.class_name!r} of {item.path!r} has no training videos",
            )
    problems.raise_if_any()
    return classes, {1: (lists["train"], lists["test"])}


def parse_kinetics(
    splits_dir: str | Path, manifests: Manifests | None = None
) -> tuple[list[str], SplitLists]:
    """Classes (index = 0-based label) and split 1 (train CSV / val CSV) of Kinetics-400.

    Labels are 0-based in alphabetical order of the training CSV's class names. Without any
    CSV in `splits_dir` (or its `annotations/`), the split comes from the extracted folders in
    `manifests`; without those either, VtdlError.
    """
    root = _official_dir(Path(splits_dir), "annotations", lambda d: any(d.glob("*.csv")))
    csvs = sorted(p for p in root.glob("*.csv") if p.is_file())
    if not csvs:
        if manifests is None:
            raise VtdlError(f"{root}: no Kinetics split CSVs (train.csv, validate.csv)")
        _warn(f"{root}: no split CSVs; taking classes and split from the extracted folders")
        return _kinetics_from_folders(manifests)
    train_csv = _pick_csv(root, csvs, _K_TRAIN_CSV, "kinetics_400_train.csv or train.csv")
    val_csv = _pick_csv(root, csvs, _K_VAL_CSV, "kinetics_400_val.csv, validate.csv or val.csv")
    problems = _Problems("problems in the Kinetics split CSVs")
    train = _read_kinetics_csv(train_csv, ("train",), problems)
    test_all = _read_kinetics_csv(val_csv, _K_VAL_FOLDERS, problems)
    classes = sorted({item.class_name for item in train})
    known = set(classes)
    test = []
    for item in test_all:
        if item.class_name in known:
            test.append(item)
        else:
            problems.add(item.where, f"unknown class {item.class_name!r} (not in {train_csv.name})")
    _check_lists(problems, train, test)
    problems.raise_if_any()
    return classes, {1: (train, test)}


# --------------------------------------------------------------------------------------------
# Training videos per class, counted without parsing (the job graph's checks, vtdl.data.sizes)


def _count(counts: dict[str, int], name: str) -> None:
    counts[name] = counts.get(name, 0) + 1


def listed_train_counts(fmt: str, splits_dir: str | Path) -> dict[int, dict[str, int]]:
    """Training videos per class of every split the official files define, counted fast.

    No line is checked (that is `vtdl splits`' job), so a count is an upper bound of what the
    lists will hold: every line that could be a training video counts. A full Kinetics CSV
    takes a fraction of a second, the parsers many seconds. Raises VtdlError or OSError where
    the files cannot be found or read.
    """
    found: dict[int, dict[str, int]] = {}
    if fmt == "ucf101":
        root = _official_dir(
            Path(splits_dir), "ucfTrainTestlist", lambda d: (d / "classInd.txt").is_file()
        )
        for k in (1, 2, 3):
            train, test = root / f"trainlist0{k}.txt", root / f"testlist0{k}.txt"
            if train.is_file() and test.is_file():
                counts: dict[str, int] = {}
                for _, line in _read_lines(train):
                    _count(counts, line.split("/", 1)[0])
                found[k] = counts
    elif fmt == "hmdb51":
        root = _official_dir(
            Path(splits_dir), "testTrainMulti_7030_splits", lambda d: bool(_hmdb_files(d))
        )
        for (name, k), path in _hmdb_files(root).items():
            codes = [line.rsplit(maxsplit=1)[-1] for _, line in _read_lines(path)]
            found.setdefault(k, {})[name] = codes.count("1")
    else:
        root = _official_dir(Path(splits_dir), "annotations", lambda d: any(d.glob("*.csv")))
        csvs = sorted(p for p in root.glob("*.csv") if p.is_file())
        path = _pick_csv(root, csvs, _K_TRAIN_CSV, "kinetics_400_train.csv or train.csv")
        counts = {}
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = csv.reader(f)
            header = [name.strip().lower() for name in next(rows, [])]
            if "label" not in header:
                raise VtdlError(f"{path}: no 'label' column")
            column = header.index("label")
            for row in rows:
                if len(row) > column and row[column].strip():
                    _count(counts, row[column].strip())
        found[1] = counts
    return found


# --------------------------------------------------------------------------------------------
# Extraction manifests


def _manifest_files(frames_dir: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(frames_dir):
        # Hidden folders are atomic_dir's temporaries of killed or replaced shards.
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if "manifest.json" in filenames:
            found.append(Path(dirpath) / "manifest.json")
    return sorted(found)


def _entries(path: Path, data: dict[str, Any], key: str, field: str) -> list[tuple[str, Any]]:
    """(path, field value) of each entry of list `key`, checking the manifest schema."""
    entries = data.get(key, [] if key == "skipped" else None)
    if not isinstance(entries, list):
        raise VtdlError(f"{path}: key '{key}' missing or not a list")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise VtdlError(f"{path}: key '{key}[{i}].path' missing or not a string")
        value = entry.get(field)
        if field == "frames" and (type(value) is not int or value < 0):
            raise VtdlError(f"{path}: key '{key}[{i}].frames' is not a count: {value!r}")
        out.append((entry["path"], value if field == "frames" else str(value or "")))
    return out


def load_manifests(frames_dir: str | Path, fmt: str | None = None) -> Manifests:
    """Read every `manifest.json` under `frames_dir` (one per extracted shard).

    With `fmt`, a manifest of another format is an error (a wrong --frames folder).
    Raises VtdlError for a missing folder, no manifests, a bad manifest or a video in two.
    """
    frames_dir = Path(frames_dir)
    if not frames_dir.is_dir():
        raise VtdlError(f"{frames_dir}: frames directory not found (run vtdl extract first)")
    files = _manifest_files(frames_dir)
    if not files:
        raise VtdlError(f"{frames_dir}: no manifest.json under it (run vtdl extract first)")
    frames: dict[str, int] = {}
    skipped: dict[str, str] = {}
    origin: dict[str, Path] = {}
    problems = _Problems("videos in more than one manifest")
    for path in progress(files, "manifests", total=len(files), unit="shard"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise VtdlError(f"{path}: not a readable JSON manifest: {err}") from None
        if not isinstance(data, dict):
            raise VtdlError(f"{path}: not a manifest (expected a JSON object)")
        if fmt is not None and data.get("format", fmt) != fmt:
            raise VtdlError(f"{path}: key 'format' is {data['format']!r}, expected {fmt!r}")
        for key, field, store in (("videos", "frames", frames), ("skipped", "error", skipped)):
            for video, value in _entries(path, data, key, field):
                if video in origin:
                    problems.add(str(path), f"{video!r} is also in {origin[video]}")
                    continue
                store[video] = value
                origin[video] = path
    problems.raise_if_any()
    return Manifests(frames, skipped, origin, files)


# --------------------------------------------------------------------------------------------
# Joining lists with manifests, and writing


class _Resolver:
    """Finds the extracted (or extraction-skipped) video a listed path refers to."""

    def __init__(self, manifests: Manifests) -> None:
        self.known = set(manifests.frames) | set(manifests.skipped)
        self._folded: dict[str, list[str]] | None = None

    def matches(self, item: ListedVideo) -> list[str]:
        """Exact matches of the item's candidate paths, else case-insensitive ones."""
        exact = [path for path in item.candidates if path in self.known]
        if exact:
            return list(dict.fromkeys(exact))
        if self._folded is None:
            self._folded = {}
            for path in sorted(self.known):
                self._folded.setdefault(path.lower(), []).append(path)
        folded = [path for c in item.candidates for path in self._folded.get(c.lower(), [])]
        return list(dict.fromkeys(folded))


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Iterable[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _check_no_escape(splits_dir: Path) -> None:
    """Refuse a split folder holding symlinks that lead outside it (nothing is read there)."""
    if not splits_dir.is_dir():
        return  # the parsers name the missing folder
    for path in sorted(splits_dir.rglob("*")):
        target = escapes(path, splits_dir) if path.is_symlink() else None
        if target is not None:
            raise VtdlError(
                f"{path}: a symlink to {target}, outside the split folder {splits_dir}; copy "
                "the file into the folder instead (split files are read only inside it)"
            )


def _parse(fmt: str, splits_dir: Path, manifests: Manifests) -> tuple[list[str], SplitLists]:
    _check_no_escape(splits_dir)
    if fmt == "ucf101":
        return parse_ucf101(splits_dir)
    if fmt == "hmdb51":
        return parse_hmdb51(splits_dir)
    return parse_kinetics(splits_dir, manifests)


def _warn_dropped(reasons: dict[str, str], what: str) -> None:
    if reasons:
        paths = sorted(reasons)
        more = f" (+{len(paths) - MAX_WARNED} more)" if len(paths) > MAX_WARNED else ""
        _warn(
            f"dropped {len(paths)} listed video(s) {what}: "
            f"{', '.join(paths[:MAX_WARNED])}{more}; see dropped.csv"
        )


def _resolve(
    splits: SplitLists, manifests: Manifests, on_missing: str, frames_dir: Path
) -> tuple[SplitLists, dict[str, dict[str, str]]]:
    """Listed videos with their extracted paths, and those dropped (reason kind -> path -> why).

    Raises VtdlError for ambiguous matches, missing videos (with on_missing "error"), two lines
    resolving to one file, or a list left empty.
    """
    resolver = _Resolver(manifests)
    missing = _Problems("listed videos were not extracted")
    ambiguous = _Problems("listed videos match several extracted videos")
    collisions = _Problems("listed videos resolve to one extracted video")
    dropped: dict[str, dict[str, str]] = {"skipped": {}, "missing": {}, "empty": {}}
    resolved: SplitLists = {}
    for k, lists in splits.items():
        kept: list[list[ListedVideo]] = []
        for items in lists:
            kept.append([])
            for item in items:
                found = resolver.matches(item)
                if len(found) > 1:
                    ambiguous.add(item.where, f"{item.path!r} matches {found}")
                elif not found and on_missing == "skip":
                    dropped["missing"][item.path] = "missing: no extraction manifest lists it"
                elif not found:
                    missing.add(item.where, f"{item.path!r} is in no manifest under {frames_dir}")
                elif found[0] in manifests.skipped:
                    error = manifests.skipped[found[0]]
                    dropped["skipped"][found[0]] = f"skipped at extraction: {error}"
                elif manifests.frames[found[0]] == 0:
                    dropped["empty"][found[0]] = "extracted with 0 frames"
                else:
                    kept[-1].append(replace(item, path=found[0], alternatives=()))
        # The case-insensitive fallback could map two listed lines onto one file.
        _check_lists(collisions, kept[0], kept[1])
        resolved[k] = (kept[0], kept[1])
    ambiguous.raise_if_any()
    missing.raise_if_any("(--on-missing skip drops missing videos and lists them in dropped.csv)")
    collisions.raise_if_any()
    for k, (train, test) in resolved.items():
        for name, items in (("train", train), ("test", test)):
            if not items:
                raise VtdlError(f"split {k}: the {name} list is empty after dropping videos")
    return resolved, dropped


def _write_lists(
    out_dir: Path,
    classes: list[str],
    resolved: SplitLists,
    frames: dict[str, int],
    dropped: dict[str, str],
) -> None:
    """classes.csv, split{k}/train.csv, split{k}/test.csv and dropped.csv, as one directory."""
    label_of = {name: label for label, name in enumerate(classes)}
    with atomic_dir(out_dir) as tmp:
        _write_csv(tmp / CLASSES_FILE, CLASSES_HEADER, enumerate(classes))
        for k, parts in resolved.items():
            for part, items in zip(LIST_PARTS, parts, strict=True):
                rows = sorted(
                    (item.path, label_of[item.class_name], item.class_name, frames[item.path])
                    for item in items
                )
                _write_csv(split_list(tmp, k, part), LIST_HEADER, rows)
        _write_csv(tmp / DROPPED_FILE, DROPPED_HEADER, sorted(dropped.items()))


def build_splits(
    fmt: str,
    splits_dir: str | Path,
    frames_dir: str | Path,
    out_dir: str | Path,
    on_missing: str = "error",
) -> dict[str, Any]:
    """Write the canonical lists of data set `fmt` to `out_dir` (atomically, as a whole).

    Args:
        fmt: "ucf101", "hmdb51" or "kinetics".
        splits_dir: the untouched official split files.
        frames_dir: extraction output; every `manifest.json` under it is read.
        out_dir: receives classes.csv, split{k}/train.csv, split{k}/test.csv, dropped.csv.
        on_missing: "error" (default) or "skip": what to do with a listed video that no
            manifest mentions. Videos that extraction skipped are always dropped and reported.
    Returns:
        {"format", "classes", "splits": {k: {"train": n, "test": n}},
         "dropped": {"skipped": n, "missing": n, "empty": n}}.
    """
    if fmt not in FORMATS:
        raise VtdlError(f"--format: {fmt!r} is not one of {list(FORMATS)}")
    if on_missing not in ON_MISSING:
        raise VtdlError(f"--on-missing: {on_missing!r} is not one of {list(ON_MISSING)}")
    frames_dir = Path(frames_dir)
    manifests = load_manifests(frames_dir, fmt)
    classes, splits = _parse(fmt, Path(splits_dir), manifests)
    resolved, dropped = _resolve(splits, manifests, on_missing, frames_dir)
    _warn_dropped(dropped["skipped"], "that extraction skipped")
    _warn_dropped(dropped["missing"], "that were not extracted")
    _warn_dropped(dropped["empty"], "extracted with 0 frames")
    all_dropped = {path: why for reasons in dropped.values() for path, why in reasons.items()}
    _write_lists(Path(out_dir), classes, resolved, manifests.frames, all_dropped)
    return {
        "format": fmt,
        "classes": len(classes),
        "splits": {
            k: {"train": len(train), "test": len(test)} for k, (train, test) in resolved.items()
        },
        "dropped": {reason: len(paths) for reason, paths in dropped.items()},
    }


# --------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `vtdl splits` options."""
    parser.add_argument("--format", required=True, choices=FORMATS, help="official data set")
    parser.add_argument(
        "--splits", required=True, type=Path, help="folder of the untouched official split files"
    )
    parser.add_argument(
        "--frames",
        required=True,
        type=Path,
        help="extraction output (frame files and one manifest.json per shard)",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write the lists to")
    parser.add_argument(
        "--on-missing",
        choices=ON_MISSING,
        default="error",
        help="a listed video that was never extracted: fail (default) or drop "
        "and report it (normal for Kinetics)",
    )


def run(args: argparse.Namespace) -> None:
    """Run `vtdl splits` with parsed arguments."""
    summary = build_splits(args.format, args.splits, args.frames, args.out, args.on_missing)
    sizes = "; ".join(
        f"split{k} {n['train']} train / {n['test']} test" for k, n in summary["splits"].items()
    )
    dropped = sum(summary["dropped"].values())
    print(
        f"vtdl splits: {summary['classes']} classes; {sizes}; {dropped} dropped -> {args.out}",
        file=sys.stderr,
    )
