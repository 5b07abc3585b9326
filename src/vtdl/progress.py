"""Progress output for long work that stays readable in Snakemake log files.

On a terminal the bar refreshes often; in a log file (not a TTY) it prints a line at most every
few seconds, so logs show progress without megabytes of carriage returns.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> tqdm:
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        file=sys.stderr,
        mininterval=0.2 if interactive else 5.0,
        dynamic_ncols=interactive,
        ascii=not interactive,
    )
