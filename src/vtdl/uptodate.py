"""A no-op `make reproduce` answered without building Snakemake's job graph again.

Snakemake needs about 2 s here to find that nothing is to be done (its start-up, the workflow,
the job graph, the checksums of small inputs), and `make reproduce` about 3.5 s. When Snakemake
has found exactly that, `vtdl.snakelock` records a fingerprint of everything the answer rests on
in `.snakemake/vtdl/uptodate.json`; the next plain `make reproduce` with the same fingerprint
says so at once, without starting Snakemake.

The fingerprint covers: the command line; the content of every `--configfile`; the `VTDL_*` and
`SNAKEMAKE_*` environment variables; and the path, size, modification time and mode of every
file under the project folder and under every data set folder a config file names, following
symbolic links (data linked into `data/` counts), except version control, the virtual
environment (its set-up stamp counts), caches and Snakemake's logs and locks. An edited,
touched, added or deleted file, another overlay or another option sends the run to Snakemake.

Only plain runs take the shortcut: a command line with anything but the profile, the core count,
config files and targets (`--forcerun`, `--touch`, `-n`, ...) always goes to Snakemake. The
record is written only after Snakemake itself, in a dry run of the same command line, answered
"Nothing to be done" and no file changed meanwhile; that dry run costs a run that has work to do
about 3 s more.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from vtdl.fsutil import atomic_write_json

STAMP = Path(".snakemake") / "vtdl" / "uptodate.json"
NOTHING_TO_BE_DONE = "Nothing to be done"

# Options whose value is the next word; with config files and targets, the only ones a plain
# `make reproduce` passes.
_VALUE_OPTIONS = {"--workflow-profile", "--cores", "-c", "--jobs", "-j"}
_CONFIG_OPTIONS = {"--configfile", "--configfiles"}

# Not part of what Snakemake decides on (or rewritten by every Snakemake start).
_SKIP_ANYWHERE = {".git", "__pycache__", ".pytest_cache", ".ruff_cache"}
_SKIP_PATHS = {
    ".venv",
    ".dvc/cache",
    ".dvc/tmp",
    ".snakemake/log",
    ".snakemake/locks",
    ".snakemake/vtdl",
    ".snakemake/vtdl-run.lock",
    ".snakemake/conda",
    ".snakemake/conda-archive",
    ".snakemake/singularity",
    ".snakemake/iocache",
}
_ALSO = (".venv/.installed",)  # `make setup`'s stamp: a re-install counts as a change


def config_files(argv: list[str]) -> list[str] | None:
    """The `--configfile` files of a plain Snakemake command line; None when it is not plain."""
    if not argv or not Path(argv[0]).name.startswith("snakemake"):
        return None
    files: list[str] = []
    words = iter(argv[1:])
    in_config = False
    for word in words:
        if word in _CONFIG_OPTIONS:
            in_config = True
        elif word in _VALUE_OPTIONS:
            in_config = False
            if next(words, None) is None:
                return None
        elif word.startswith("-"):
            return None  # any other option: Snakemake decides
        elif in_config:
            files.append(word)
    return files


def _data_folders(root: Path, files: list[str]) -> list[Path]:
    """Every `datasets.<name>.videos` / `.splits` any config file names (a superset of what the
    merged configuration uses), relative paths taken from the project folder."""
    folders = []
    for name in ["params.yaml", *files]:
        try:
            config = yaml.safe_load((root / name).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # Snakemake will say what is wrong with it
        datasets = config.get("datasets") if isinstance(config, dict) else None
        for ds in (datasets or {}).values() if isinstance(datasets, dict) else ():
            for key in ("videos", "splits"):
                if isinstance(ds, dict) and isinstance(ds.get(key), str):
                    folders.append(root / ds[key])
    return folders


def _walk(top: Path, root: Path, seen: set[tuple[int, int]]) -> Iterator[tuple]:
    """(path, size, mtime_ns, mode) of every file below `top`, links followed, each real
    folder once."""
    try:
        info = top.stat()
    except OSError:
        yield (str(top), -1, -1, -1)  # missing: that counts too
        return
    if (info.st_dev, info.st_ino) in seen:
        return
    seen.add((info.st_dev, info.st_ino))
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError:
        yield (str(top), -1, -1, -1)
        return
    for entry in entries:
        path = Path(entry.path)
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else None
        if entry.name in _SKIP_ANYWHERE or rel in _SKIP_PATHS:
            continue
        try:
            if entry.is_dir():
                yield from _walk(path, root, seen)
                continue
            st = entry.stat()
        except OSError:
            yield (entry.path, -1, -1, -1)  # a dangling link
            continue
        yield (entry.path, st.st_size, st.st_mtime_ns, st.st_mode)


def fingerprint(argv: list[str], files: list[str], root: Path) -> str:
    digest = hashlib.sha256()

    def add(*items: object) -> None:
        digest.update(json.dumps(items).encode("utf-8", "surrogateescape") + b"\n")

    add("argv", argv)
    add(
        "env",
        sorted((k, v) for k, v in os.environ.items() if k.startswith(("VTDL_", "SNAKEMAKE_"))),
    )
    for name in files:
        try:
            add("config", name, hashlib.sha256((root / name).read_bytes()).hexdigest())
        except OSError:
            add("config", name, None)
    seen: set[tuple[int, int]] = set()
    for top in [root, *_data_folders(root, files)]:
        for item in _walk(top, root, seen):
            add(*item)
    for name in _ALSO:
        try:
            st = (root / name).stat()
            add(name, st.st_size, st.st_mtime_ns)
        except OSError:
            add(name, None)
    return digest.hexdigest()


def _recorded(root: Path) -> dict | None:
    try:
        record = json.loads((root / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def answer(argv: list[str], root: Path) -> bool:
    """Whether `argv` (a Snakemake command line) has nothing to do in `root`, answered from the
    record or by a dry run of Snakemake (then recorded). False: run Snakemake for real."""
    files = config_files(argv)
    if files is None:
        return False
    before = fingerprint(argv, files, root)
    record = _recorded(root)
    if record is not None and record.get("fingerprint") == before:
        print(
            f"vtdl: {NOTHING_TO_BE_DONE}: no file, option or config file changed since Snakemake "
            f"found everything up to date ({record.get('checked', '?')}); `make dry-run` asks "
            "Snakemake itself",
            file=sys.stderr,
        )
        return True
    (root / STAMP).unlink(missing_ok=True)
    dry = subprocess.run([*argv, "--dry-run"], cwd=root, capture_output=True, text=True)
    said = dry.stdout + dry.stderr
    if dry.returncode != 0 or NOTHING_TO_BE_DONE not in said:
        return False  # work to do (or an error the real run will show)
    if fingerprint(argv, files, root) == before:  # nothing changed while Snakemake looked
        checked = time.strftime("%Y-%m-%d %H:%M:%S")
        atomic_write_json(root / STAMP, {"fingerprint": before, "checked": checked})
    print(next(line for line in said.splitlines() if NOTHING_TO_BE_DONE in line), file=sys.stderr)
    return True
