"""What every downstream job is, without torch: its identity, settings, MLflow record, result.

A downstream job evaluates one encoder (or a freshly initialised backbone: `scratch`) on one
downstream data set and split. `JobSpec` holds what names and records it: the MLflow params
and tags agreed in the contract, the metric prefix, the labelled subset, and `finish` (final
metrics + result JSON) and `log_confusion` (confusion artifacts). The protocols that only read
cached features (`linear`, `retrieval`) use this module alone, so they start without importing
torch; the ones that run the encoder build on it in `vtdl.downstream.common`.

Labelled subset: `labels_per_class` training videos per class, drawn with a generator seeded
by (seed, label) alone, so a class's draw does not depend on the other classes or the list
order; a class with fewer videos contributes all of them; 0 means every training video.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vtdl import seeds, tracking
from vtdl.config import load_settings
from vtdl.errors import VtdlError
from vtdl.figures import draw_confusion
from vtdl.fsutil import atomic_write_json
from vtdl.names import CLASSES_HEADER, metric_prefix
from vtdl.settings import DownstreamSettings

# Sections of `downstream` that belong to one protocol; the others see none of them.
SECTIONS = ("finetune", "linear")
# The `downstream` keys a features job uses: the clips it encodes and how it runs. Nothing else
# reaches it, so changing the labelled subset or a training setting keeps the cached features.
FEATURE_SETTINGS = (
    "clip_len",
    "stride",
    "crop_size",
    "resize_short",
    "test_clips",
    "eval_batch_size",
    "num_workers",
    "device",
    "amp",
    "channels_last",
)
# Of those, the ones that decide the feature values: a job given other values must not use them.
FEATURE_KEYS = ("clip_len", "stride", "crop_size", "resize_short", "test_clips")
# The fields of a JobSpec that say who computed a result (stored with cached features).
IDENTITY = (
    "dataset",
    "split",
    "seed",
    "method",
    "backbone_name",
    "encoder_path",
    "encoder_sha256",
    "pretrain_run_id",
    "pretrain_dataset",
    "classes",
    "train_list_sha256",
    "test_list_sha256",
)


def labelled_subset(labels: Sequence[int], labels_per_class: int, seed: int) -> list[int]:
    """Indices (sorted) into `labels` of `labels_per_class` videos per class, drawn from `seed`.

    Each class draws with its own generator seeded by (seed, label), without replacement; a
    class with at most `labels_per_class` videos keeps them all; 0 keeps every video.
    """
    if labels_per_class < 0:
        raise VtdlError(f"downstream.labels_per_class must be >= 0, got {labels_per_class}")
    by_label: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[int(label)].append(index)
    chosen: list[int] = []
    for label in sorted(by_label):
        indices = by_label[label]
        if labels_per_class == 0 or len(indices) <= labels_per_class:
            chosen.extend(indices)
            continue
        rng = seeds.numpy_rng(seed, seeds.LABELLED, label)
        picked = rng.choice(len(indices), size=labels_per_class, replace=False)
        chosen.extend(indices[i] for i in picked)
    return sorted(chosen)


def read_classes(path: Path) -> list[str]:
    """Class names by label from a `label,class` classes.csv written by `vtdl splits`."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise VtdlError(f"{path}: classes file not found (run vtdl splits?)") from None
    if not rows or tuple(rows[0]) != CLASSES_HEADER:
        raise VtdlError(f"{path} line 1: expected header {','.join(CLASSES_HEADER)}")
    names: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or row[0] != str(len(names)):
            raise VtdlError(f"{path} line {line}: expected label {len(names)} and a class name")
        names.append(row[1])
    if not names:
        raise VtdlError(f"{path}: no classes")
    return names


def resolve_settings(value: str, protocol: str) -> DownstreamSettings:
    """The `downstream` settings of one protocol's job (`--settings`), validated and typed.

    Only what the protocol uses is kept: the grid and the other protocols' sections do not
    change its result (and would otherwise restart a resumable job when edited).
    """
    keys = FEATURE_SETTINGS if protocol == "features" else None
    settings = load_settings(value, "downstream", keys=keys)
    if protocol in SECTIONS and protocol not in settings:
        raise VtdlError(f"--settings: downstream.{protocol}: the section is missing")
    drop = {"datasets", "splits", *(p for p in SECTIONS if p != protocol)}
    return DownstreamSettings.from_section({k: v for k, v in settings.items() if k not in drop})


@dataclass
class JobSpec:
    """One downstream job's identity and settings (no model, no data loading)."""

    protocol: str
    dataset: str
    split: int
    seed: int
    method: str
    backbone_name: str
    encoder_path: str  # "none" for scratch
    encoder_sha256: str  # "none" for scratch
    pretrain_run_id: str | None
    pretrain_dataset: str | None
    settings: DownstreamSettings
    out: Path
    classes: list[str]
    train_labels: list[int]
    train_list_sha256: str
    test_list_sha256: str
    extra_params: dict[str, Any] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        """Metric name prefix: `<dataset>/split<k>/<protocol>`."""
        return metric_prefix(self.dataset, self.split, self.protocol)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def test_clips(self) -> int:
        return self.settings.test_clips

    def labelled_indices(self) -> list[int]:
        return labelled_subset(self.train_labels, self.settings.labels_per_class, self.seed)

    def tags(self) -> dict[str, Any]:
        """The contract's tags (None values are not set)."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "seed": self.seed,
            "backbone": self.backbone_name,
            "method": self.method,
            "pretrain_dataset": self.pretrain_dataset,
            "pretrain_run_id": self.pretrain_run_id,
        }

    def params(self) -> dict[str, Any]:
        """Everything the result depends on: MLflow params and the resume digest."""
        return {
            "protocol": self.protocol,
            "dataset": self.dataset,
            "split": self.split,
            "seed": self.seed,
            "method": self.method,
            "backbone": self.backbone_name,
            "encoder": self.encoder_path,
            "encoder_sha256": self.encoder_sha256,
            "train_list_sha256": self.train_list_sha256,
            "test_list_sha256": self.test_list_sha256,
            "num_classes": self.num_classes,
            **self.extra_params,
            **self.settings.as_dict(),
        }

    def identity(self) -> dict[str, Any]:
        """Who computed this job's result (see IDENTITY), JSON-ready."""
        return {name: getattr(self, name) for name in IDENTITY}

    def run_name(self) -> str:
        """The job in full, for its log."""
        return (
            f"{self.protocol} {self.dataset} split{self.split} {self.method} "
            f"{self.backbone_name} s{self.seed}"
        )

    def mlflow_run_name(self) -> str:
        """Short, for MLflow's run list: nested under its pretraining run, the protocol and
        the data set say the rest; a top-level (scratch) run names its encoder too."""
        short = f"{self.protocol} {self.dataset}/{self.split}"
        if self.pretrain_run_id:
            return short
        return f"{short} {self.method} {self.backbone_name} s{self.seed}"

    def start_run(self, params: dict[str, Any], **options: Any) -> Any:
        """The job's MLflow run (a context manager): its name, tags, and its pretraining run
        as parent, so the UI shows each encoder's evaluations under it."""
        return tracking.start_run(
            self.protocol,
            params,
            self.tags(),
            run_name=self.mlflow_run_name(),
            parent_run_id=self.pretrain_run_id,
            claim=tracking.claim_path(self.out),
            **options,
        )

    def log_inputs(self, run: tracking.Run, train_source: str, test_source: str) -> None:
        """The train and test lists as the run's MLflow dataset inputs (their digests)."""
        base = f"{self.dataset}/split{self.split}"
        run.log_dataset(f"{base}/train", train_source, self.train_list_sha256, "training")
        run.log_dataset(f"{base}/test", test_source, self.test_list_sha256, "evaluation")


def log_confusion(run: tracking.Run, job: JobSpec, confusion: np.ndarray) -> None:
    """Artifacts confusion_<N>clip.png, confusion_<N>clip.json (rows = true) and classes.json."""
    n = job.test_clips
    with tempfile.TemporaryDirectory(prefix="vtdl-confusion-") as tmp:
        folder = Path(tmp)
        draw_confusion(
            confusion,
            job.classes,
            folder / f"confusion_{n}clip.png",
            title=f"{job.prefix} {job.method} {job.backbone_name} s{job.seed} ({n}-clip)",
        )
        (folder / f"confusion_{n}clip.json").write_text(json.dumps(confusion.tolist()) + "\n")
        (folder / "classes.json").write_text(json.dumps(job.classes) + "\n")
        for path in sorted(folder.iterdir()):
            run.log_artifact(path)


def finish(run: tracking.Run, job: JobSpec, metrics: dict[str, float], step: int = 0) -> dict:
    """Log the final metrics and write the result JSON (atomically); returns the result."""
    run.log_metrics(metrics, step=step)
    run.flush()
    result = {"mlflow_run_id": run.run_id, "metrics": dict(sorted(metrics.items()))}
    atomic_write_json(job.out, result)
    summary = ", ".join(f"{k.removeprefix(job.prefix + '/')} {v:.3f}" for k, v in metrics.items())
    print(f"{job.run_name()}: {summary}", flush=True)
    return result
