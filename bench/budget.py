"""Where a `make reproduce` spent the machine: job CPU vs the machine's core-seconds, per stage.

Reads what the run left behind (nothing is re-run): every rule's Snakemake `benchmark:` file
(`benchmarks/<stage>/...tsv`: wall seconds and CPU seconds of the job, children included),
the jobs' logs (`logs/<stage>/...log`: the line `vtdl: startup X s CPU before the first batch`
printed by jobs that train or encode) and the newest Snakemake log that ran jobs
(`.snakemake/log/`: the first and last timestamps, i.e. the pipeline's wall time). Prints a
Markdown table:

    .venv/bin/python bench/budget.py [--cores N]

Figures: the share of the machine's core-seconds (wall x cores) that jobs used, each stage's
share of the job CPU, the CPU seconds of start-up per job before its first batch (median and
maximum per stage), and wall / CPU per job (above 1: the job waited, e.g. for a core).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STARTUP = re.compile(r"vtdl: startup ([0-9.]+) s CPU before the first batch")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")


def pipeline_wall_s(log_dir: Path) -> float:
    """Seconds between the first and the last timestamp of the newest Snakemake log that ran
    jobs (a later no-op `make reproduce` writes a log without any)."""
    logs = sorted(log_dir.glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    for log in reversed(logs):
        stamps = [
            datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
            for line in log.read_text().splitlines()
            if (m := STAMP.match(line))
        ]
        if stamps:
            return (max(stamps) - min(stamps)).total_seconds()
    raise SystemExit(f"no Snakemake log of a run that ran jobs under {log_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="cores of the run")
    parser.add_argument("--root", type=Path, default=Path("."), help="project root")
    args = parser.parse_args()
    cpu: dict[str, list[float]] = defaultdict(list)
    ratio: dict[str, list[float]] = defaultdict(list)
    for tsv in sorted((args.root / "benchmarks").rglob("*.tsv")):
        stage = tsv.relative_to(args.root / "benchmarks").parts[0]
        with open(tsv, newline="") as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        cpu[stage].append(float(row["cpu_time"]))
        ratio[stage].append(float(row["s"]) / max(float(row["cpu_time"]), 1e-9))
    startup: dict[str, list[float]] = defaultdict(list)
    for log in sorted((args.root / "logs").rglob("*.log")):
        stage = log.relative_to(args.root / "logs").parts[0]
        if m := STARTUP.search(log.read_text(errors="replace")):
            startup[stage].append(float(m.group(1)))
    wall = pipeline_wall_s(args.root / ".snakemake" / "log")
    total = sum(sum(v) for v in cpu.values())
    print(
        f"pipeline wall {wall:.0f} s on {args.cores} cores = {wall * args.cores:.0f} core-s; "
        f"jobs used {total:.0f} s of CPU ({100 * total / (wall * args.cores):.0f}%)\n"
    )
    print(
        "| stage | jobs | CPU s | share of job CPU | start-up CPU s (median / max) | wall / CPU |"
    )
    print("|:---|---:|---:|---:|---:|---:|")
    for stage in sorted(cpu, key=lambda s: -sum(cpu[s])):
        times = startup.get(stage)
        start = f"{statistics.median(times):.2f} / {max(times):.2f}" if times else "—"
        print(
            f"| {stage} | {len(cpu[stage])} | {sum(cpu[stage]):.0f} | "
            f"{100 * sum(cpu[stage]) / total:.0f}% | {start} | "
            f"{statistics.median(ratio[stage]):.2f} |"
        )


if __name__ == "__main__":
    main()
