"""The package files a stage's code is made of: its module and everything of `vtdl` it imports.

Snakemake re-runs a job when one of its inputs changes, so each rule lists the source files of
its stage as inputs. Kept by hand, such lists go wrong (a module imported but not listed lets a
cached result go stale silently); here they are computed by following the `vtdl` imports of the
stage's module, transitively, with `ast` (nothing is imported, so building the job graph stays
fast). Imports inside functions count too: they run as part of the stage. A package's
`__init__.py` counts for each of its modules (Python runs it first).

Not followed: `vtdl.cli` (it only dispatches, and no stage imports it) and data files such as
the params schema, which validates settings but does not change what a job computes.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "vtdl"
PACKAGE_DIR = Path(__file__).resolve().parent


def _module_path(module: str, root: Path) -> Path | None:
    """The file of `vtdl.a.b` under `root` (the package folder); None if there is none."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@cache
def _imported_modules(path: Path, module: str) -> frozenset[str]:
    """Every `vtdl.*` module named by an import statement of `path` (the file of `module`).

    Cached: the stages share most of their modules, and parsing each file once instead of once
    per stage takes 0.6 s off building the job graph (a no-op `make reproduce`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
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
    return sorted(
        _module_path(name, root).relative_to(root).as_posix()  # type: ignore[union-attr]
        for name in stage_modules(module, root)
    )
