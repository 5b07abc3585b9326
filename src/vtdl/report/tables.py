"""The report's tables: ablation, every final metric, pretext diagnostics.

Each table is computed once as cells of (mean, std, n) and then rendered three ways: Markdown
(for the README / a reader), LaTeX (booktabs, for a paper) and a tidy CSV (one row per cell,
raw unscaled values, for anyone re-analysing). Rendering is deterministic: rows and columns are
sorted, floats use fixed formats, nothing depends on time or on the store's path, so two runs
on the same store give byte-identical files.

Conventions: mean ± sample standard deviation (n - 1 in the denominator) over seeds; a cell
from a single seed shows no ±; a cell with no finished run shows "—". Accuracy-like metrics
stored as fractions in [0, 1] are shown in percent (decided per column: a column with any
value above 1 is taken to be in percent already).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vtdl.names import (
    METHODS,
    PROTOCOLS,
    SCRATCH,
    clip_metric,
    parse_clip_metric,
    parse_recall_metric,
    recall_metric,
)
from vtdl.report.collect import (
    DownstreamRun,
    PretrainRun,
    Store,
    clip_counts,
    metric_sort_key,
)

MISSING = "—"
ABLATION_METHODS = tuple(METHODS)
PROTOCOL_ORDER = tuple(PROTOCOLS)
PRETEXT_COLUMNS = (
    ("instance_acc", "instance acc"),
    ("pos_beats_neg", "pos beats temporal neg"),
    ("loss", "loss"),
    ("train_top1", "supervised train top1"),
)
CONVENTIONS = (
    "Cells: mean ± sample standard deviation over seeds, n = number of seeds "
    "(no ± when n = 1); — = no finished run. Only FINISHED MLflow runs count, and only the "
    "latest run of each job."
)


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # None for a single value
    n: int
    flag_n: bool = False  # show n even where the table does not (fewer seeds than the row)


def summarize(values: Sequence[float], expected: int | None = None) -> Stat | None:
    """Mean, sample std and count of `values` (None when empty).

    With `expected` (the runs of the row), a cell with fewer values shows its own n.
    """
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    flag = expected is not None and len(values) != expected
    return Stat(mean=statistics.fmean(values), std=std, n=len(values), flag_n=flag)


def method_key(method: str) -> tuple[int, str]:
    """Ablation order first (scratch ... supervised), any other method after, by name."""
    if method in ABLATION_METHODS:
        return (ABLATION_METHODS.index(method), "")
    return (len(ABLATION_METHODS), method)


def method_label(method: str) -> str:
    return METHODS[method].label if method in METHODS else method


def metric_label(name: str) -> str:
    """`top1_10clip` -> "top1 (10-clip)", `recall_at_5` -> "R@5"."""
    k = parse_recall_metric(name)
    if k is not None:
        return f"R@{k}"
    clip = parse_clip_metric(name)
    if clip:
        return f"{clip[0]} ({clip[1]}-clip)"
    return name


# ----------------------------------------------------------------------------------------------
# A rendered table
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    label: str
    kind: str  # "text" | "acc" (percent when stored as a fraction) | "value" (3 decimals)


@dataclass(frozen=True)
class Grid:
    """One table: a heading, columns, and rows of text / Stat / None cells."""

    heading: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[str | Stat | None, ...], ...]


def _fmt(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _scales(grid: Grid) -> list[float]:
    """Per column: 100 for an accuracy column whose values all lie in [0, 1], else 1."""
    scales = []
    for index, column in enumerate(grid.columns):
        stats = [row[index] for row in grid.rows if isinstance(row[index], Stat)]
        fraction = all(0.0 <= s.mean <= 1.0 for s in stats)  # type: ignore[union-attr]
        scales.append(100.0 if column.kind == "acc" and fraction else 1.0)
    return scales


def _cell_text(cell: str | Stat | None, column: Column, scale: float, show_n: bool) -> str:
    if cell is None:
        return MISSING
    if isinstance(cell, str):
        return cell
    decimals = 1 if column.kind == "acc" else 3
    text = _fmt(cell.mean * scale, decimals)
    if cell.std is not None:
        text += f" ± {_fmt(cell.std * scale, decimals)}"
    return f"{text} (n={cell.n})" if show_n or cell.flag_n else text


def _labels(grid: Grid, scales: list[float]) -> list[str]:
    return [
        f"{c.label} (%)" if scale == 100.0 else c.label
        for c, scale in zip(grid.columns, scales, strict=True)
    ]


def _text_rows(grid: Grid, show_n: bool) -> tuple[list[str], list[list[str]]]:
    scales = _scales(grid)
    rows = [
        [
            _cell_text(cell, column, scale, show_n)
            for cell, column, scale in zip(row, grid.columns, scales, strict=True)
        ]
        for row in grid.rows
    ]
    return _labels(grid, scales), rows


def render_markdown(title: str, intro: str, grids: Iterable[Grid], show_n: bool = True) -> str:
    out = [f"# {title}", "", intro, ""]
    for grid in grids:
        header, rows = _text_rows(grid, show_n)
        out += [f"## {grid.heading}", ""]
        out.append("| " + " | ".join(header) + " |")
        out.append(
            "|" + "|".join(":---" if c.kind == "text" else "---:" for c in grid.columns) + "|"
        )
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        out.append("")
    return "\n".join(out)


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "—": "--",
    "§": r"\S{}",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def render_latex(title: str, grids: Iterable[Grid], show_n: bool = True) -> str:
    out = [f"% {tex_escape(title)} -- generated by `vtdl report`; needs \\usepackage{{booktabs}}"]
    for grid in grids:
        header, rows = _text_rows(grid, show_n)
        spec = "".join("l" if c.kind == "text" else "r" for c in grid.columns)
        out += [
            r"\begin{table}[ht]",
            r"\centering",
            r"\small",
            f"\\caption{{{tex_escape(title)}: {tex_escape(grid.heading)}}}",
            f"\\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(tex_escape(h) for h in header) + r" \\",
            r"\midrule",
            *(" & ".join(tex_escape(cell) for cell in row) + r" \\" for row in rows),
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    return "\n".join(out)


def render_csv(header: Sequence[str], records: Iterable[Sequence[object]]) -> str:
    """Tidy CSV: one row per cell, floats with 6 decimals (raw, unscaled), `\\n` line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        writer.writerow(
            ["" if v is None else f"{v:.6f}" if isinstance(v, float) else v for v in record]
        )
    return buffer.getvalue()


def _stat_fields(stat: Stat | None) -> tuple[float | None, float | None, int]:
    if stat is None:
        return (None, None, 0)
    return (stat.mean, stat.std, stat.n)


# ----------------------------------------------------------------------------------------------
# Ablation
# ----------------------------------------------------------------------------------------------


def groups(store: Store) -> list[tuple[str, str | None]]:
    """(backbone, pretraining set) pairs to report; scratch joins every pair of its backbone.

    A backbone with only scratch runs gets one group with pretraining set None.
    """
    pairs = {(r.backbone, r.pretrain_dataset) for r in store.downstream if r.method != SCRATCH}
    backbones = {r.backbone for r in store.downstream}
    for backbone in backbones - {b for b, _ in pairs}:
        pairs.add((backbone, None))
    return sorted(pairs, key=lambda p: (p[0], p[1] or ""))


def group_runs(store: Store, backbone: str, pretrain: str | None) -> list[DownstreamRun]:
    return [
        r
        for r in store.downstream
        if r.backbone == backbone and (r.method == SCRATCH or r.pretrain_dataset == pretrain)
    ]


def group_heading(backbone: str, pretrain: str | None) -> str:
    if pretrain is None:
        return f"backbone {backbone}, no pretrained encoder"
    return f"backbone {backbone}, pretrained on {pretrain}"


def default_clips(store: Store, clips: int | None) -> int:
    """The N of the N-clip columns: given, else the largest N > 1 in the store, else 1."""
    if clips is not None:
        return clips
    found = clip_counts(store.downstream)
    return found[-1] if found else 1


def _by_seed(
    runs: Iterable[DownstreamRun], method: str, protocol: str, ds: str, split: int, metric: str
) -> dict[int, float]:
    """{seed: value of `metric`} of the runs of one ablation cell."""
    return {
        r.seed: r.metrics[metric]
        for r in runs
        if (r.method, r.protocol, r.dataset, r.split) == (method, protocol, ds, split)
        and metric in r.metrics
    }


def _cell(
    runs: Iterable[DownstreamRun], method: str, protocol: str, ds: str, split: int, metric: str
) -> Stat | None:
    values = _by_seed(runs, method, protocol, ds, split, metric)
    return summarize([values[seed] for seed in sorted(values)])


def ablation_columns(clips: int) -> tuple[tuple[str, str], ...]:
    top1 = clip_metric("top1", clips)
    return (("finetune", top1), ("linear", top1), ("retrieval", recall_metric(1)))


# Paired differences the ablation reports (row minus baseline), beyond-noise marked.
DIFFERENCES = tuple((name, base) for name, m in METHODS.items() for base in m.compare_to)
DIFFERENCE_NOTE = (
    "Paired differences: for each seed present in both rows (the same seed draws the same "
    "labelled subset and initialisation), row minus baseline, in percentage points; a cell is "
    "the mean difference ± twice its standard error over those seeds, and * marks a "
    "difference larger than twice its standard error (beyond the seed noise; n < 2 gives no "
    "interval and no claim)."
)


@dataclass(frozen=True)
class Difference:
    """A paired difference over seeds: mean, standard error (None for n < 2), n."""

    mean: float
    se: float | None
    n: int

    @property
    def beyond_noise(self) -> bool:
        return self.se is not None and abs(self.mean) > 2.0 * self.se


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Difference | None:
    """Mean and standard error of a[seed] - b[seed] over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None
    return Difference(statistics.fmean(diffs), se, len(diffs))


def _difference_text(diff: Difference | None, scale: float) -> str:
    if diff is None:
        return MISSING
    text = f"{diff.mean * scale:+.1f}"
    if diff.se is None:
        return f"{text} (n=1)"
    return f"{text} ± {2.0 * diff.se * scale:.1f}" + (" *" if diff.beyond_noise else "")


@dataclass(frozen=True)
class Ablation:
    grids: tuple[Grid, ...]
    records: tuple[tuple, ...]  # tidy CSV rows
    # per group: (backbone, pretrain, [(column label, [(method, Stat|None)])]) for the bar chart
    bars: tuple[
        tuple[str, str | None, tuple[tuple[str, tuple[tuple[str, Stat | None], ...]], ...]], ...
    ]
    differences: tuple[tuple, ...] = ()  # tidy CSV rows of the paired differences


def ablation(store: Store, clips: int) -> Ablation:
    grids, records, bars, diff_records = [], [], [], []
    for backbone, pretrain in groups(store):
        runs = group_runs(store, backbone, pretrain)
        methods = sorted(set(ABLATION_METHODS) | {r.method for r in runs}, key=method_key)
        targets = sorted({(r.dataset, r.split) for r in runs})
        spec = [
            (ds, split, protocol, metric)
            for ds, split in targets
            for protocol, metric in ablation_columns(clips)
        ]
        columns = [Column("setting", "text")] + [
            Column(
                f"{ds}/split{split} {PROTOCOLS[protocol]} {metric_label(metric)}",
                "acc",
            )
            for ds, split, protocol, metric in spec
        ]
        rows = []
        per_column: dict[str, list[tuple[str, Stat | None]]] = {c.label: [] for c in columns[1:]}
        for method in methods:
            cells = [_cell(runs, method, p, ds, split, m) for ds, split, p, m in spec]
            rows.append((method_label(method), *cells))
            for column, (ds, split, protocol, metric), stat in zip(
                columns[1:], spec, cells, strict=True
            ):
                per_column[column.label].append((method, stat))
                records.append(
                    (
                        backbone,
                        pretrain or "",
                        method_label(method),
                        method,
                        ds,
                        split,
                        protocol,
                        metric,
                        *_stat_fields(stat),
                    )
                )
        grids.append(Grid(group_heading(backbone, pretrain), tuple(columns), tuple(rows)))
        differences = []
        for row, base in DIFFERENCES:
            if row not in methods or base not in methods:
                continue
            cells = []
            for ds, split, protocol, metric in spec:
                diff = paired_difference(
                    _by_seed(runs, row, protocol, ds, split, metric),
                    _by_seed(runs, base, protocol, ds, split, metric),
                )
                cells.append(_difference_text(diff, 100.0))
                if diff is not None:
                    diff_records.append(
                        (backbone, pretrain or "", row, base, ds, split, protocol, metric,
                         diff.mean, diff.se, diff.n, int(diff.beyond_noise))
                    )  # fmt: skip
            differences.append((f"{row} − {base}", *cells))
        if differences:
            diff_columns = (Column("difference", "text"),) + tuple(
                Column(c.label.replace("(%)", ""), "text") for c in columns[1:]
            )
            grids.append(
                Grid(
                    f"{group_heading(backbone, pretrain)}: paired differences (points)",
                    diff_columns,
                    tuple(differences),
                )
            )
        bars.append(
            (backbone, pretrain, tuple((label, tuple(v)) for label, v in per_column.items()))
        )
    return Ablation(tuple(grids), tuple(records), tuple(bars), tuple(diff_records))


# One row per final metric; the ablation's rows also name their setting (the table's row label).
ALL_METRICS_CSV_HEADER = (
    "backbone",
    "pretrain_dataset",
    "method",
    "dataset",
    "split",
    "protocol",
    "metric",
    "mean",
    "std",
    "n",
)
ABLATION_CSV_HEADER = (*ALL_METRICS_CSV_HEADER[:2], "setting", *ALL_METRICS_CSV_HEADER[2:])


# ----------------------------------------------------------------------------------------------
# Every final metric
# ----------------------------------------------------------------------------------------------


def all_metrics(store: Store) -> tuple[Grid, list[tuple]]:
    """One row per (backbone, pretraining set, method, data set, split, protocol)."""
    keyed: dict[tuple, list[DownstreamRun]] = {}
    for run in store.downstream:
        key = (
            run.backbone,
            run.dataset,
            run.split,
            PROTOCOL_ORDER.index(run.protocol)
            if run.protocol in PROTOCOL_ORDER
            else len(PROTOCOL_ORDER),
            run.protocol,
            method_key(run.method),
            run.method,
            run.pretrain_dataset or "",
        )
        keyed.setdefault(key, []).append(run)
    metrics = sorted({m for r in store.downstream for m in r.metrics}, key=metric_sort_key)
    columns = [
        Column(name, "text")
        for name in ("backbone", "pretrained on", "method", "dataset", "split", "protocol", "n")
    ]
    columns += [Column(metric_label(m), "acc") for m in metrics]
    rows, records = [], []
    for key in sorted(keyed):
        backbone, ds, split, _, protocol, _, method, pretrain = key
        runs = sorted(keyed[key], key=lambda r: r.seed)
        stats = [
            summarize([r.metrics[m] for r in runs if m in r.metrics], len(runs)) for m in metrics
        ]
        n = len(runs)
        rows.append(
            (
                backbone,
                pretrain or MISSING,
                method,
                ds,
                str(split),
                PROTOCOLS.get(protocol, protocol),
                str(n),
                *stats,
            )
        )
        for metric, stat in zip(metrics, stats, strict=True):
            if stat is not None:
                records.append(
                    (backbone, pretrain, method, ds, split, protocol, metric, *_stat_fields(stat))
                )
    return Grid("all downstream runs", tuple(columns), tuple(rows)), records


DIFFERENCES_CSV_HEADER = (
    "backbone",
    "pretrain_dataset",
    "method",
    "baseline",
    "dataset",
    "split",
    "protocol",
    "metric",
    "mean_difference",
    "standard_error",
    "n",
    "beyond_noise",
)


# ----------------------------------------------------------------------------------------------
# Pretext diagnostics
# ----------------------------------------------------------------------------------------------


def pretext(store: Store) -> tuple[Grid, list[tuple]]:
    """Last-epoch pretext diagnostics per (pretraining set, split, backbone, method)."""
    keyed: dict[tuple, list[PretrainRun]] = {}
    for run in store.pretrain:
        key = (run.dataset, run.split, run.backbone, method_key(run.method), run.method)
        keyed.setdefault(key, []).append(run)
    columns = [Column(name, "text") for name in ("pretrained on", "backbone", "method", "n")]
    columns += [
        Column(label, "value" if name == "loss" else "acc") for name, label in PRETEXT_COLUMNS
    ]
    rows, records = [], []
    for key in sorted(keyed):
        ds, split, backbone, _, method = key
        runs = sorted(keyed[key], key=lambda r: r.seed)
        stats = [
            summarize([r.metrics[m] for r in runs if m in r.metrics], len(runs))
            for m, _ in PRETEXT_COLUMNS
        ]
        rows.append((f"{ds}/split{split}", backbone, method_label(method), str(len(runs)), *stats))
        for (metric, _), stat in zip(PRETEXT_COLUMNS, stats, strict=True):
            records.append((ds, split, backbone, method, metric, *_stat_fields(stat)))
    return Grid("pretraining runs (last-epoch means)", tuple(columns), tuple(rows)), records


PRETEXT_CSV_HEADER = (
    "pretrain_dataset",
    "split",
    "backbone",
    "method",
    "metric",
    "mean",
    "std",
    "n",
)
