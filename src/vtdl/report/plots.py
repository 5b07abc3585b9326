"""The report's figures, drawn from MLflow metric histories and run artifacts only.

Curves average the seeds (thick line, over the epochs every seed reached) and show each seed as a
thin line, so a reader sees both the trend and the spread. Figures are not byte-stable (the PNG
encoder and fonts may differ), unlike the tables.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from vtdl import tracking
from vtdl.figures import draw_confusion, pyplot, save
from vtdl.names import SCRATCH, SUPERVISED
from vtdl.report.collect import DownstreamRun, PretrainRun, Store
from vtdl.report.tables import (
    Ablation,
    group_heading,
    group_runs,
    groups,
    method_key,
    method_label,
)

log = logging.getLogger(__name__)

PRETEXT_PANELS = (
    ("loss", "pretext loss (self-supervised)"),
    ("instance_acc", "instance accuracy"),
    ("pos_beats_neg", "positive beats temporal negative"),
    ("train_top1", "supervised train top1"),
)
TRAIN_PANELS = (("train_loss", "train loss"), ("train_top1", "train top1"))


def safe_name(*parts: object) -> str:
    """A file name from parts: anything outside [A-Za-z0-9._-] becomes '-'."""
    return "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)) for p in parts if p not in (None, ""))


def _colors(methods: Sequence[str]) -> dict[str, object]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(sorted(methods, key=method_key))}


def _draw_curves(ax, curves: dict[str, list[list[tuple[int, float]]]], colors) -> bool:
    """Per method: thin line per seed, thick mean over the steps all seeds have. True if drawn."""
    drawn = False
    for method in sorted(curves, key=method_key):
        seeds = [c for c in curves[method] if c]
        if not seeds:
            continue
        color = colors[method]
        for curve in seeds:
            ax.plot(*zip(*curve, strict=True), color=color, linewidth=0.7, alpha=0.35)
        common = sorted(set.intersection(*(set(s for s, _ in c) for c in seeds)))
        if common:
            lookup = [dict(c) for c in seeds]
            mean = [sum(d[s] for d in lookup) / len(lookup) for s in common]
            ax.plot(
                common,
                mean,
                color=color,
                linewidth=2.0,
                label=f"{method_label(method)} (n={len(seeds)})",
            )
        drawn = True
    return drawn


def _panels_figure(
    title: str,
    panels: Sequence[tuple[str, str]],
    curves_of: dict[str, dict[str, list[list[tuple[int, float]]]]],
    path: Path,
) -> bool:
    """One row of panels (one per metric that has data); False when nothing to draw."""
    present = [
        (key, label) for key, label in panels if any(any(c) for c in curves_of[key].values())
    ]
    if not present:
        return False
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    methods = sorted({m for key, _ in present for m in curves_of[key]}, key=method_key)
    colors = _colors(methods)
    fig, axes = plt.subplots(1, len(present), figsize=(4.6 * len(present), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], present, strict=True):
        _draw_curves(ax, curves_of[key], colors)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, y=1.04)
    save(fig, path)
    return True


def pretext_curves(store: Store, dest: Path) -> list[Path]:
    """Per (pretraining set, split, backbone): per-epoch pretext curves of every method."""
    written = []
    keyed: dict[tuple, list[PretrainRun]] = {}
    for run in store.pretrain:
        keyed.setdefault((run.dataset, run.split, run.backbone), []).append(run)
    for (ds, split, backbone), runs in sorted(keyed.items()):
        curves_of: dict[str, dict[str, list]] = {key: {} for key, _ in PRETEXT_PANELS}
        for run in sorted(runs, key=lambda r: (method_key(r.method), r.seed)):
            for key, _ in PRETEXT_PANELS:
                if key == "loss" and run.method == SUPERVISED:
                    continue  # cross-entropy: another objective, another scale
                history = tracking.metric_history(run.run_id, f"pretrain/epoch/{key}")
                if history:
                    curves_of[key].setdefault(run.method, []).append(history)
        path = dest / f"pretrain_curves_{safe_name(ds, f'split{split}', backbone)}.png"
        if _panels_figure(
            f"pretraining on {ds}/split{split}, {backbone}", PRETEXT_PANELS, curves_of, path
        ):
            written.append(path)
    return written


def training_curves(store: Store, dest: Path) -> list[Path]:
    """Per group, downstream set and protocol with curves: train loss and top1 per epoch."""
    written = []
    for backbone, pretrain in groups(store):
        runs = group_runs(store, backbone, pretrain)
        keyed: dict[tuple, list[DownstreamRun]] = {}
        for run in runs:
            if run.protocol in ("finetune", "linear"):
                keyed.setdefault((run.protocol, run.dataset, run.split), []).append(run)
        for (protocol, ds, split), selected in sorted(keyed.items()):
            curves_of: dict[str, dict[str, list]] = {key: {} for key, _ in TRAIN_PANELS}
            for run in sorted(selected, key=lambda r: (method_key(r.method), r.seed)):
                for key, _ in TRAIN_PANELS:
                    history = tracking.metric_history(
                        run.run_id, f"{ds}/split{split}/{protocol}/{key}"
                    )
                    if history:
                        curves_of[key].setdefault(run.method, []).append(history)
            name = safe_name(protocol, ds, f"split{split}", backbone, pretrain)
            path = dest / f"{name}_curves.png"
            title = f"{protocol} on {ds}/split{split}; {group_heading(backbone, pretrain)}"
            if _panels_figure(title, TRAIN_PANELS, curves_of, path):
                written.append(path)
    return written


def ablation_bars(result: Ablation, dest: Path) -> list[Path]:
    """Grouped bars per group: one cluster per column, one bar per method, std error bars."""
    plt = pyplot()
    written = []
    for backbone, pretrain, columns in result.bars:
        methods = sorted({m for _, cells in columns for m, _ in cells}, key=method_key)
        colors = _colors(methods)
        width = 0.8 / max(len(methods), 1)
        fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(columns)), 4.2))
        values = [s.mean for _, cells in columns for _, s in cells if s is not None]
        scale = 100.0 if values and all(0 <= v <= 1 for v in values) else 1.0
        for i, method in enumerate(methods):
            xs, heights, errors = [], [], []
            for j, (_, cells) in enumerate(columns):
                stat = dict(cells).get(method)
                if stat is not None:
                    xs.append(j - 0.4 + width * (i + 0.5))
                    heights.append(stat.mean * scale)
                    errors.append((stat.std or 0.0) * scale)
            if xs:
                ax.bar(
                    xs,
                    heights,
                    width,
                    yerr=errors,
                    capsize=2,
                    color=colors[method],
                    label=method_label(method),
                )
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels([label for label, _ in columns], rotation=25, ha="right", fontsize=7)
        ax.set_ylabel("%" if scale == 100.0 else "value")
        ax.set_title(f"ablation: {group_heading(backbone, pretrain)} (mean ± std over seeds)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
        path = dest / f"ablation_{safe_name(backbone, pretrain)}.png"
        save(fig, path)
        written.append(path)
    return written


def _fetch(run: DownstreamRun, name: str, into: Path) -> Path | None:
    """Download artifact `name` of `run` into `into`; None when the run does not have it."""
    return tracking.download_artifact(run.artifact_uri, name, into)


def _redraw_confusion(matrix_path: Path, classes_path: Path | None, title: str, path: Path) -> None:
    """The job's own renderer, from the stored counts (rows = true) and class names."""
    matrix = json.loads(matrix_path.read_text(encoding="utf-8"))
    classes = json.loads(classes_path.read_text(encoding="utf-8")) if classes_path else None
    if isinstance(classes, dict):  # {"0": "name"} or {"name": 0}: order by index
        items = sorted(classes.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[1])
        classes = [v if k.isdigit() else k for k, v in items]
    if classes is not None and len(classes) != len(matrix):
        classes = None  # names that do not fit: label by index rather than mislabel
    draw_confusion(matrix, classes, path, title)


def confusions(runs: Iterable[DownstreamRun], clips: int, dest: Path) -> list[Path]:
    """The N-clip confusion matrix of every fine-tune run: copied PNG, else redrawn from JSON."""
    written: list[Path] = []
    lacking: list[str] = []
    for run in sorted(
        runs,
        key=lambda r: (
            r.backbone,
            r.pretrain_dataset or "",
            r.dataset,
            r.split,
            method_key(r.method),
            r.seed,
        ),
    ):
        if run.protocol != "finetune" or not run.artifact_uri:
            continue
        pretrain = None if run.method == SCRATCH else run.pretrain_dataset
        name = safe_name(
            run.dataset, f"split{run.split}", run.method, run.backbone, pretrain, f"s{run.seed}"
        )
        path = dest / "confusion" / f"{name}.png"
        with tempfile.TemporaryDirectory() as tmp:
            try:
                png = _fetch(run, f"confusion_{clips}clip.png", Path(tmp))
                if png is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(png, path)
                    written.append(path)
                    continue
                matrix = _fetch(run, f"confusion_{clips}clip.json", Path(tmp))
                if matrix is None:
                    lacking.append(run.run_id)
                    continue
                classes = _fetch(run, "classes.json", Path(tmp))
                _redraw_confusion(matrix, classes, f"{name} ({clips}-clip)", path)
                written.append(path)
            except Exception as err:  # noqa: BLE001 - a figure is never worth failing the report
                log.warning("confusion matrix of run %s not drawn: %s", run.run_id, err)
    if lacking:
        log.warning(
            "%d fine-tune run(s) have no confusion_%dclip.png/.json artifact (first: %s)",
            len(lacking),
            clips,
            lacking[0],
        )
    return written
