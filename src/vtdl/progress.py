"""Progress output for long work that stays readable in Snakemake log files.

On a terminal the bar refreshes often; in a log file (not a TTY) it prints a line at most every
few seconds, so logs show progress without megabytes of carriage returns.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


_started = False


def _announce_first(items: Iterable[T]) -> Iterator[T]:
    """Yield `items`; at the process's first batch print the CPU seconds spent until then
    (imports, MLflow, model and data set-up: the job's start-up cost, README "budget")."""
    global _started
    for item in items:
        if not _started and _is_main_rank():
            _started = True
            cpu = time.process_time()
            print(f"vtdl: startup {cpu:.2f} s CPU before the first batch", file=sys.stderr)
        yield item


def _is_main_rank() -> bool:
    """False in data-parallel ranks other than 0, which stay quiet. Read from torchrun's RANK
    variable rather than vtdl.distributed: this module must not import torch."""
    return os.environ.get("RANK", "0") in ("", "0")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> tqdm:
    interactive = sys.stderr.isatty()
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return tqdm(
        _announce_first(iterable) if unit == "batch" else iterable,
        desc=desc,
        total=total,
        unit=unit,
        file=sys.stderr,
        mininterval=0.2 if interactive else 5.0,
        dynamic_ncols=interactive,
        ascii=not interactive,
        disable=not _is_main_rank(),
    )
