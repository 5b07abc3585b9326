"""The package files a stage's code is made of: its module and everything of `vtdl` it imports.

Snakemake re-runs a job when one of its inputs changes, so each rule lists the source files of
its stage as inputs. Kept by hand, such lists go wrong (a module imported but not listed lets a
cached result go stale silently); here they are computed by following the `vtdl` imports of the
stage's module, transitively, with `ast` (nothing is imported, so building the job graph stays
fast). Imports inside functions count too: they run as part of the stage. A package's
`__init__.py` counts for each of its modules (Python runs it first).

Not followed: `vtdl.cli` (it only dispatches, and no stage imports it) and data files such as
the params schema, which validates settings but does not change what a job computes.

Parsing every module takes about a third of a second, paid by every Snakemake start (a no-op
`make reproduce` included), so what each file imports is remembered on disk by the hash of its
text (`use_cache_file`; the workflow keeps it in `.snakemake/`): only an edited file is parsed
again. The hash of this module's own source is part of every key, so a change to the parser
below can never reuse what an older parser found.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from functools import cache
from pathlib import Path

PACKAGE = "vtdl"
PACKAGE_DIR = Path(__file__).resolve().parent
_PARSER = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _module_path(module: str, root: Path) -> Path | None:
    """The file of `vtdl.a.b` under `root` (the package folder); None if there is none."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


class _ImportCache:
    """What each module file imports, by the hash of its text, kept in one JSON file."""

    def __init__(self) -> None:
        self.file: Path | None = None
        self.found: dict[str, list[str]] = {}  # read from the file
        self.used: dict[str, list[str]] = {}  # looked up or parsed by this process
        self.unsaved = False

    def attach(self, file: Path | None) -> None:
        self.file, self.found, self.used, self.unsaved = file, {}, {}, False
        if file is None:
            return
        try:
            self.found = json.loads(file.read_text(encoding="utf-8"))["modules"]
        except (OSError, ValueError, KeyError, TypeError):
            self.found = {}  # missing, unreadable or of another layout: parse again

    def imports(self, path: Path, module: str) -> frozenset[str]:
        text = path.read_bytes()
        key = f"{_PARSER} {module} {path.name} {hashlib.sha256(text).hexdigest()}"
        names = self.found.get(key)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            names = sorted(_parse_imports(text, path, module))
            self.unsaved = True
        self.used[key] = names
        return frozenset(names)

    def save(self) -> None:
        """Write what this process used (so entries of edited-away versions drop out), atomically:
        two Snakemake runs may write at once."""
        if self.file is None or not self.unsaved:
            return
        tmp = self.file.with_name(f"{self.file.name}.{os.getpid()}.tmp")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"modules": self.used}, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.file)
            self.unsaved = False
        except OSError:
            tmp.unlink(missing_ok=True)  # a read-only checkout still works, only slower


_CACHE = _ImportCache()


def use_cache_file(file: str | os.PathLike | None) -> None:
    """Remember what each module imports in `file` between processes (None: in memory only)."""
    _CACHE.attach(None if file is None else Path(file))
    _imported_modules.cache_clear()
    stage_modules.cache_clear()


@cache
def _imported_modules(path: Path, module: str) -> frozenset[str]:
    """Every `vtdl.*` module named by an import statement of `path` (the file of `module`).

    Cached in memory too: the stages share most of their modules."""
    return _CACHE.imports(path, module)


def _parse_imports(text: bytes, path: Path, module: str) -> frozenset[str]:
    tree = ast.parse(text, filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.add(base)
            # `from vtdl import tracking` names a module, `from vtdl.x import f` a function:
            # the candidates that are not modules are dropped by the caller.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(name for name in found if name == PACKAGE or name.startswith(PACKAGE + "."))


def _with_parents(module: str) -> list[str]:
    """`vtdl.a.b` -> [vtdl, vtdl.a, vtdl.a.b]: importing a module runs its packages first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def stage_modules(module: str, root: Path = PACKAGE_DIR) -> tuple[str, ...]:
    """`module` and every `vtdl` module it imports, transitively, sorted by name."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        for candidate in _with_parents(name):
            if candidate in seen:
                continue
            path = _module_path(candidate, root)
            if path is None:
                continue  # a function or class named in `from vtdl.x import name`
            seen.add(candidate)
            todo.extend(_imported_modules(path, candidate))
    if module not in seen:
        raise ValueError(f"no module {module!r} under {root}")
    return tuple(sorted(seen))


def stage_files(module: str, root: Path = PACKAGE_DIR) -> list[str]:
    """The files of `stage_modules(module)`, relative to the package folder (e.g. `data/x.py`)."""
    files = sorted(
        _module_path(name, root).relative_to(root).as_posix()  # type: ignore[union-attr]
        for name in stage_modules(module, root)
    )
    _CACHE.save()
    return files
