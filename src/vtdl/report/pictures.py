"""Pictures of the data for the report: a retrieval contact sheet and a class montage.

Unlike the tables, these need the frames: each picture is drawn from the data folder
(`<data>/splits/<dataset>` lists and `<data>/frames/<dataset>` frame files, what `make pull`
brings back) and, for the contact sheet, a retrieval run's `neighbours.json` artifact. Where
either is missing the picture is left out with a warning; the report never fails for it.

    plots/retrieval/<dataset>_split<k>_<method>_<backbone>_<pretrain set>_s<seed>.png
    plots/classes/<dataset>.png
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from vtdl import tracking
from vtdl.figures import draw_contact_sheet, draw_montage
from vtdl.names import CLASSES_FILE, METHODS, SCRATCH, split_list
from vtdl.report.collect import DownstreamRun, Store
from vtdl.report.plots import safe_name

log = logging.getLogger(__name__)

SHEET_FRAMES = 4  # frames per strip of the contact sheet
MONTAGE_FRAMES = 8  # frames per class of the montage
MONTAGE_CLASSES = 20  # a montage of UCF101's 101 classes would be unreadable: the first 20
# The run the contact sheet shows: the project's own method if there is one, else the last
# method of the registry (the most complete row of the ablation), else scratch.
PREFERENCE = ("vtdl", *reversed(tuple(METHODS)), SCRATCH)


def _strip(frames_root: Path, rel_path: str, count: int) -> np.ndarray:
    """`count` frames spread over the whole video, side by side, as one (H, W*count, 3) image."""
    from vtdl.data.framestore import FrameFile, frame_file_path  # torch: only when drawing

    with FrameFile(frame_file_path(frames_root, rel_path)) as frames:
        picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
        images = frames.read(picks)
    return np.concatenate(list(images), axis=1)


def _lists(data: Path, dataset: str, split: int) -> tuple[list, list, list[str]] | None:
    """(train entries, test entries, class names) of a split, or None when not on disk."""
    from vtdl.data.clips import read_list
    from vtdl.downstream.job import read_classes

    lists = data / "splits" / dataset
    if not split_list(lists, split, "train").is_file():
        return None
    return (
        read_list(split_list(lists, split, "train")),
        read_list(split_list(lists, split, "test")),
        read_classes(lists / CLASSES_FILE),
    )


def _sheet_run(runs: list[DownstreamRun]) -> DownstreamRun:
    def preference(run: DownstreamRun) -> tuple:
        rank = PREFERENCE.index(run.method) if run.method in PREFERENCE else len(PREFERENCE)
        return (rank, run.backbone, run.pretrain_dataset or "", run.seed)

    return min(runs, key=preference)


def contact_sheets(store: Store, data: Path, dest: Path) -> list[Path]:
    """One contact sheet per (data set, split) with retrieval runs: the preferred run's
    queries and their nearest neighbours, as frame strips."""
    by_set: dict[tuple[str, int], list[DownstreamRun]] = {}
    for run in store.downstream:
        if run.protocol == "retrieval" and run.artifact_uri:
            by_set.setdefault((run.dataset, run.split), []).append(run)
    written = []
    for _, runs in sorted(by_set.items()):
        run = _sheet_run(runs)
        try:
            path = _contact_sheet(run, data, dest)
        except Exception as err:  # noqa: BLE001 - a picture is never worth failing the report
            log.warning("retrieval contact sheet of run %s not drawn: %s", run.run_id, err)
            continue
        if path is not None:
            written.append(path)
    return written


def _contact_sheet(run: DownstreamRun, data: Path, dest: Path) -> Path | None:
    lists = _lists(data, run.dataset, run.split)
    if lists is None:
        log.warning("no %s lists under %s: retrieval contact sheet left out", run.dataset, data)
        return None
    train, test, classes = lists
    with tempfile.TemporaryDirectory() as tmp:
        found = tracking.download_artifact(run.artifact_uri, "neighbours.json", Path(tmp))
        if found is None:
            log.warning("run %s has no neighbours.json: contact sheet left out", run.run_id)
            return None
        examples = json.loads(found.read_text(encoding="utf-8"))["queries"]
    frames = data / "frames" / run.dataset
    rows = []
    for example in examples:
        query = test[example["test_row"]]
        neighbours = [
            (
                _strip(frames, train[row].path, SHEET_FRAMES),
                classes[train[row].label],
                train[row].label == query.label,
            )
            for row in example["train_rows"]
        ]
        rows.append((_strip(frames, query.path, SHEET_FRAMES), classes[query.label], neighbours))
    pretrain = None if run.method == SCRATCH else run.pretrain_dataset
    name = safe_name(
        run.dataset, f"split{run.split}", run.method, run.backbone, pretrain, f"s{run.seed}"
    )
    path = dest / "retrieval" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    title = (
        f"{run.dataset} split {run.split}: nearest training videos of test queries "
        f"({run.method} {run.backbone} seed {run.seed}; green: same class)"
    )
    draw_contact_sheet(rows, path, title)
    return path


def class_montages(store: Store, data: Path, dest: Path) -> list[Path]:
    """One montage per evaluated data set: the first training video of each class."""
    written = []
    first_split: dict[str, int] = {}
    for run in store.downstream:
        first_split[run.dataset] = min(run.split, first_split.get(run.dataset, run.split))
    for dataset, split in sorted(first_split.items()):
        lists = _lists(data, dataset, split)
        if lists is None:
            log.warning("no %s split lists under %s: class montage left out", dataset, data)
            continue
        train, _, classes = lists
        firsts: dict[int, str] = {}
        for entry in train:
            firsts.setdefault(entry.label, entry.path)
        shown = sorted(firsts)[:MONTAGE_CLASSES]
        try:
            strips = [
                (classes[label], _strip(data / "frames" / dataset, firsts[label], MONTAGE_FRAMES))
                for label in shown
            ]
        except Exception as err:  # noqa: BLE001 - a picture is never worth failing the report
            log.warning("class montage of %s not drawn: %s", dataset, err)
            continue
        path = dest / "classes" / f"{safe_name(dataset)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        more = f", the first {len(shown)} of {len(classes)}" if len(shown) < len(classes) else ""
        draw_montage(strips, path, f"{dataset}: one training video per class{more}")
        written.append(path)
    return written
