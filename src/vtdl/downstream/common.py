"""What the three downstream protocols share: the job, its data, multi-clip outputs, results.

A downstream job evaluates one encoder (or a freshly initialised backbone: `scratch`) on one
downstream data set and split. `prepare_job` resolves the command line into a `Job`: the
backbone, the split lists, the labelled subset, the runtime and the MLflow params and tags
agreed in the contract. The protocols then use `clip_outputs` (one row per video, one column
per clip, for any per-clip function), `classification_report` (1-clip and N-clip video-level
metrics) and `finish` (confusion artifacts, result JSON).

Labelled subset: `labels_per_class` training videos per class, drawn with a generator seeded
by (seed, label) alone, so a class's draw does not depend on the other classes or the list
order; a class with fewer videos contributes all of them; 0 means every training video.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from vtdl import tracking
from vtdl.augment import ClipAugment, ClipEval
from vtdl.checkpoint import load_encoder
from vtdl.config import load_settings
from vtdl.data.clips import ClipDataset, VideoEntry, read_list
from vtdl.errors import VtdlError
from vtdl.fsutil import atomic_write_json, sha256_file
from vtdl.metrics import (
    average_clip_probabilities,
    classification_metrics,
    confusion_matrix,
    ranking,
    write_confusion_png,
)
from vtdl.models import build_backbone, global_average_pool
from vtdl.progress import progress
from vtdl.runtime import Runtime, seed_everything, select_runtime

PROTOCOLS = ("finetune", "linear", "retrieval")
SCRATCH = "scratch"
METHODS = (SCRATCH, "moco", "moco_td", "vtdl", "supervised")
CLASSIFICATION_METRICS = ("top1", "top5", "meanclass")


# ----------------------------------------------------------------------------------------------
# Labelled subset and class names
# ----------------------------------------------------------------------------------------------


def labelled_subset(entries: Sequence[VideoEntry], labels_per_class: int, seed: int) -> list[int]:
    """Indices (sorted) into `entries` of `labels_per_class` videos per class, drawn from `seed`.

    Each class draws with its own generator seeded by (seed, label), without replacement; a
    class with at most `labels_per_class` videos keeps them all; 0 keeps every video.
    """
    if labels_per_class < 0:
        raise VtdlError(f"downstream.labels_per_class must be >= 0, got {labels_per_class}")
    by_label: dict[int, list[int]] = defaultdict(list)
    for index, entry in enumerate(entries):
        by_label[entry.label].append(index)
    chosen: list[int] = []
    for label in sorted(by_label):
        indices = by_label[label]
        if labels_per_class == 0 or len(indices) <= labels_per_class:
            chosen.extend(indices)
            continue
        rng = np.random.default_rng([seed, label])
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
    if not rows or rows[0] != ["label", "class"]:
        raise VtdlError(f"{path} line 1: expected header label,class")
    names: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or row[0] != str(len(names)):
            raise VtdlError(f"{path} line {line}: expected label {len(names)} and a class name")
        names.append(row[1])
    if not names:
        raise VtdlError(f"{path}: no classes")
    return names


# ----------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One downstream job, resolved from the command line and the `downstream` settings."""

    protocol: str
    dataset: str
    split: int
    seed: int
    method: str
    backbone_name: str
    backbone: nn.Module
    encoder_path: str  # "none" for scratch
    encoder_record: dict[str, Any] | None
    settings: dict[str, Any]
    runtime: Runtime
    lists: Path
    frames: Path
    out: Path
    classes: list[str]
    train_entries: list[VideoEntry]
    test_entries: list[VideoEntry]
    pretrain_dataset: str | None
    extra_params: dict[str, Any] = field(default_factory=dict)

    @property
    def train_list(self) -> Path:
        return self.lists / f"split{self.split}" / "train.csv"

    @property
    def test_list(self) -> Path:
        return self.lists / f"split{self.split}" / "test.csv"

    @property
    def prefix(self) -> str:
        """Metric name prefix: `<dataset>/split<k>/<protocol>`."""
        return f"{self.dataset}/split{self.split}/{self.protocol}"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def test_clips(self) -> int:
        return int(self.settings["test_clips"])

    def labelled_indices(self) -> list[int]:
        return labelled_subset(self.train_entries, self.settings["labels_per_class"], self.seed)

    def tags(self) -> dict[str, Any]:
        """The contract's tags (None values are not set)."""
        source = (self.encoder_record or {}).get("source", {})
        return {
            "dataset": self.dataset,
            "split": self.split,
            "seed": self.seed,
            "backbone": self.backbone_name,
            "method": self.method,
            "pretrain_dataset": self.pretrain_dataset,
            "pretrain_run_id": source.get("mlflow_run_id") or None,
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
            "encoder_sha256": (
                sha256_file(self.encoder_path) if self.encoder_path != "none" else "none"
            ),
            "train_list_sha256": sha256_file(self.train_list),
            "test_list_sha256": sha256_file(self.test_list),
            "num_classes": self.num_classes,
            **self.extra_params,
            **self.settings,
        }

    def run_name(self) -> str:
        return (
            f"{self.protocol} {self.dataset} split{self.split} {self.method} "
            f"{self.backbone_name} s{self.seed}"
        )

    # -- data ----------------------------------------------------------------------------------

    def train_dataset(self, indices: Sequence[int]) -> Dataset:
        """Random clips of the given training videos with clip-consistent augmentation.

        Random crop, rotation and colour jitter (`color_jitter`: brightness, contrast,
        saturation, hue strengths; off by default: on the embedded set, pretraining-strength
        jitter keeps a network trained from scratch on 100 videos at chance for the epochs a
        CPU affords).
        """
        s = self.settings
        brightness, contrast, saturation, hue = s["color_jitter"]
        augment = ClipAugment(
            s["crop_size"],
            s["resize_short"],
            rotation=s["rotation"],
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            hue=hue,
        )
        dataset = ClipDataset(
            self.train_list, self.frames, s["clip_len"], s["stride"], "random", transform=augment
        )
        return Subset(dataset, list(indices))

    def eval_dataset(
        self, which: str, num_clips: int, indices: Sequence[int] | None = None
    ) -> Dataset:
        """`num_clips` uniformly spaced, centre-cropped clips per video of the train/test list.

        One clip is the centre clip of the video (`uniform_starts`).
        """
        s = self.settings
        dataset = ClipDataset(
            self.train_list if which == "train" else self.test_list,
            self.frames,
            s["clip_len"],
            s["stride"],
            "uniform",
            num_clips=num_clips,
            transform=ClipEval(s["crop_size"], s["resize_short"]),
        )
        return dataset if indices is None else Subset(dataset, list(indices))

    def backbone_features(self) -> Callable[[Tensor], Tensor]:
        """Pooled (B, D) features of the backbone, which is put on the device in eval mode."""
        self.backbone.to(self.runtime.device).eval()
        return lambda clips: global_average_pool(self.backbone(clips))


def _resolve_settings(value: str, protocol: str) -> dict[str, Any]:
    settings = load_settings(value, "downstream")
    if settings["resize_short"] < settings["crop_size"]:
        raise VtdlError(
            f"--settings: downstream.resize_short ({settings['resize_short']}) is smaller than "
            f"downstream.crop_size ({settings['crop_size']})"
        )
    if protocol in ("finetune", "linear") and protocol not in settings:
        raise VtdlError(f"--settings: downstream.{protocol}: the section is missing")
    # Only what this protocol uses: the grid and the other protocols' sections do not change
    # its result (and would otherwise restart a resumable job when edited).
    drop = {"datasets", "splits", *(p for p in ("finetune", "linear") if p != protocol)}
    return {k: v for k, v in settings.items() if k not in drop}


def _check_same(what: str, given: Any, recorded: Any, path: str) -> None:
    if given is not None and recorded is not None and str(given) != str(recorded):
        raise VtdlError(
            f"--{what} {given} does not match the encoder file {path}, which records "
            f"{what} {recorded}"
        )


def prepare_job(args: argparse.Namespace, protocol: str) -> Job:
    """Resolve the command line: settings, encoder (or scratch backbone), lists, runtime."""
    settings = _resolve_settings(args.settings, protocol)
    if args.threads:
        torch.set_num_threads(args.threads)
    lists, frames = Path(args.lists), Path(args.frames)
    if not frames.is_dir():
        raise VtdlError(f"--frames {frames}: directory not found")
    classes = read_classes(lists / "classes.csv")
    train_entries = read_list(lists / f"split{args.split}" / "train.csv")
    test_entries = read_list(lists / f"split{args.split}" / "test.csv")
    for list_name, entries in (("train", train_entries), ("test", test_entries)):
        bad = [e for e in entries if e.label >= len(classes)]
        if bad:
            raise VtdlError(
                f"{lists / f'split{args.split}' / f'{list_name}.csv'}: video {bad[0].path!r} has "
                f"label {bad[0].label}, but {lists / 'classes.csv'} has {len(classes)} classes"
            )
        if not entries:
            raise VtdlError(f"{lists / f'split{args.split}' / f'{list_name}.csv'}: no videos")

    if args.encoder == "none":
        if not args.backbone:
            raise VtdlError("--encoder none (scratch) needs --backbone NAME")
        if args.seed is None:
            raise VtdlError("--encoder none (scratch) needs --seed")
        if args.method not in (None, SCRATCH):
            raise VtdlError(f"--method {args.method}: without an encoder the method is scratch")
        try:
            options = json.loads(args.backbone_options)
        except json.JSONDecodeError as err:
            raise VtdlError(f"--backbone-options: not a JSON object: {err}") from None
        if not isinstance(options, dict):
            raise VtdlError("--backbone-options: not a JSON object")
        seed_everything(args.seed)
        backbone = build_backbone(args.backbone, **options)
        record = None
        method, backbone_name, seed = SCRATCH, args.backbone, args.seed
        pretrain_dataset = args.pretrain_dataset
    else:
        path = Path(args.encoder)
        if not path.is_file():
            raise VtdlError(f"--encoder {path}: encoder file not found")
        backbone, record = load_encoder(path)
        source = record.get("source", {})
        _check_same("backbone", args.backbone, record["backbone"], args.encoder)
        _check_same("method", args.method, source.get("method"), args.encoder)
        _check_same("seed", args.seed, source.get("seed"), args.encoder)
        _check_same("pretrain-dataset", args.pretrain_dataset, source.get("dataset"), args.encoder)
        backbone_name = record["backbone"]
        method = args.method or source.get("method")
        seed = args.seed if args.seed is not None else source.get("seed")
        pretrain_dataset = args.pretrain_dataset or source.get("dataset")
        if method is None or seed is None:
            raise VtdlError(f"--encoder {path}: records no method/seed; give --method and --seed")
        seed = int(seed)
    runtime = select_runtime(settings["device"], settings["amp"], settings["channels_last"])
    return Job(
        protocol=protocol,
        dataset=args.dataset,
        split=args.split,
        seed=seed,
        method=method,
        backbone_name=backbone_name,
        backbone=backbone,
        encoder_path=str(args.encoder),
        encoder_record=record,
        settings=settings,
        runtime=runtime,
        lists=lists,
        frames=frames,
        out=Path(args.out),
        classes=classes,
        train_entries=train_entries,
        test_entries=test_entries,
        pretrain_dataset=pretrain_dataset,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every downstream stage takes."""
    parser.add_argument(
        "--encoder",
        required=True,
        help="encoder.pt written by vtdl pretrain, or `none` for a backbone trained from scratch",
    )
    parser.add_argument(
        "--backbone", help="backbone name (required with --encoder none; else checked)"
    )
    parser.add_argument(
        "--backbone-options",
        default="{}",
        help="JSON constructor options of the scratch backbone (pretrain.backbone_options.<name>)",
    )
    parser.add_argument(
        "--method", choices=METHODS, help="method tag (default: the encoder's; scratch for none)"
    )
    parser.add_argument(
        "--seed", type=int, help="seed (default: the encoder's; required with --encoder none)"
    )
    parser.add_argument("--dataset", required=True, help="downstream data set name")
    parser.add_argument("--split", type=int, required=True, help="split number k")
    parser.add_argument("--lists", required=True, help="canonical split lists: data/splits/<ds>")
    parser.add_argument("--frames", required=True, help="frames root: data/frames/<ds>")
    parser.add_argument("--pretrain-dataset", help="pretraining data set (tag; checked)")
    parser.add_argument("--out", required=True, help="result JSON to write")
    parser.add_argument(
        "--settings",
        default="params.yaml",
        help="the `downstream` parameters: a params file or an inline JSON object",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")


# ----------------------------------------------------------------------------------------------
# Multi-clip outputs and metrics
# ----------------------------------------------------------------------------------------------


def _collate_clips(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    return {
        "video": torch.stack([item["video"] for item in items]),
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
    }


@torch.no_grad()
def clip_outputs(
    fn: Callable[[Tensor], Tensor], dataset: Dataset, job: Job, desc: str
) -> tuple[np.ndarray, np.ndarray]:
    """Apply `fn` (clips (B, C, T, H, W) -> (B, K)) to every clip of a uniform-mode dataset.

    Returns (outputs (V, N, K) float32, labels (V,)), one row per video in dataset order.
    """
    s = job.settings
    workers = s["num_workers"]
    loader = DataLoader(
        dataset,
        batch_size=s["eval_batch_size"],
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate_clips,
        pin_memory=job.runtime.device.type == "cuda",
    )
    outputs, labels = [], []
    for batch in progress(loader, desc, total=len(loader), unit="batch"):
        video = batch["video"]  # (B, N, C, T, H, W)
        b, n = video.shape[:2]
        clips = job.runtime.to_device(video.flatten(0, 1))
        with job.runtime.autocast():
            out = fn(clips)
        outputs.append(out.float().cpu().view(b, n, -1))
        labels.append(batch["label"])
    return torch.cat(outputs).numpy(), torch.cat(labels).numpy()


def classification_report(
    clip_logits_fn: Callable[[Tensor], Tensor], job: Job
) -> tuple[dict[str, float], np.ndarray]:
    """Video-level metrics of the test list with 1 centre clip and N uniform clips.

    Returns (metrics named `<prefix>/{top1,top5,meanclass}_{1clip,<N>clip}`, confusion
    matrix of the N-clip test).
    """
    metrics: dict[str, float] = {}
    confusion = None
    for clips in (1, job.test_clips):
        logits, labels = clip_outputs(
            clip_logits_fn, job.eval_dataset("test", clips), job, f"{job.protocol} test {clips}clip"
        )
        scores = average_clip_probabilities(logits)
        for name, value in classification_metrics(scores, labels).items():
            metrics[f"{job.prefix}/{name}_{clips}clip"] = value
        if clips == job.test_clips:
            confusion = confusion_matrix(labels, ranking(scores)[:, 0], job.num_classes)
    assert confusion is not None
    return metrics, confusion


def log_confusion(run: tracking.Run, job: Job, confusion: np.ndarray) -> None:
    """Artifacts confusion_<N>clip.png, confusion_<N>clip.json (rows = true) and classes.json."""
    n = job.test_clips
    with tempfile.TemporaryDirectory(prefix="vtdl-confusion-") as tmp:
        folder = Path(tmp)
        write_confusion_png(
            confusion,
            job.classes,
            folder / f"confusion_{n}clip.png",
            title=f"{job.prefix} {job.method} {job.backbone_name} s{job.seed} ({n}-clip)",
        )
        (folder / f"confusion_{n}clip.json").write_text(json.dumps(confusion.tolist()) + "\n")
        (folder / "classes.json").write_text(json.dumps(job.classes) + "\n")
        for path in sorted(folder.iterdir()):
            run.log_artifact(path)


def finish(run: tracking.Run, job: Job, metrics: dict[str, float], step: int = 0) -> dict:
    """Log the final metrics and write the result JSON (atomically); returns the result."""
    run.log_metrics(metrics, step=step)
    run.flush()
    result = {"mlflow_run_id": run.run_id, "metrics": dict(sorted(metrics.items()))}
    atomic_write_json(job.out, result)
    summary = ", ".join(f"{k.removeprefix(job.prefix + '/')} {v:.3f}" for k, v in metrics.items())
    print(f"{job.run_name()}: {summary}", flush=True)
    return result
