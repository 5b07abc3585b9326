"""What the protocols that run an encoder share: the job with its data, from the command line.

`prepare_job` resolves the command line into a `Job` (a `vtdl.downstream.job.JobSpec` plus
the backbone, the split lists, the frames and the runtime). The protocols then evaluate with
`vtdl.downstream.evaluate` and record the result with `finish` and `log_confusion` (from
`job`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from vtdl.augment import ClipAugment, ClipEval
from vtdl.checkpoint import load_encoder
from vtdl.data.clips import ClipDataset, VideoEntry, read_list
from vtdl.data.limits import check_clip_fits
from vtdl.downstream.job import (
    JobSpec,
    finish,
    labelled_subset,
    log_confusion,
    read_classes,
    resolve_settings,
)
from vtdl.errors import VtdlError
from vtdl.fsutil import sha256_file
from vtdl.models import build_backbone, global_average_pool
from vtdl.names import CLASSES_FILE, LIST_PARTS, METHODS, SCRATCH, split_dir, split_list
from vtdl.runtime import Runtime, select_runtime
from vtdl.seeds import seed_everything
from vtdl.training import add_stage_arguments, set_up_process

__all__ = [
    "Job",
    "add_arguments",
    "finish",
    "labelled_subset",
    "log_confusion",
    "prepare_job",
    "read_classes",
]


# ----------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Job(JobSpec):
    """A downstream job that runs its encoder: the spec plus backbone, lists, frames, runtime."""

    backbone: nn.Module
    encoder_record: dict[str, Any] | None
    runtime: Runtime
    lists: Path
    frames: Path
    train_entries: list[VideoEntry]
    test_entries: list[VideoEntry]

    @property
    def train_list(self) -> Path:
        return split_list(self.lists, self.split, "train")

    @property
    def test_list(self) -> Path:
        return split_list(self.lists, self.split, "test")

    # -- data ----------------------------------------------------------------------------------

    def train_dataset(self, indices: Sequence[int]) -> Dataset:
        """Random clips of the given training videos with clip-consistent augmentation.

        Random crop, rotation and colour jitter (`color_jitter`: brightness, contrast,
        saturation, hue strengths; off by default: on the embedded set, pretraining-strength
        jitter keeps a network trained from scratch on 100 videos at chance for the epochs a
        CPU affords).
        """
        s = self.settings
        brightness, contrast, saturation, hue = s.color_jitter
        augment = ClipAugment(
            s.crop_size,
            s.resize_short,
            rotation=s.rotation,
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            hue=hue,
        )
        dataset = ClipDataset(
            self.train_list, self.frames, s.clip_len, s.stride, "random", transform=augment
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
            s.clip_len,
            s.stride,
            "uniform",
            num_clips=num_clips,
            transform=ClipEval(s.crop_size, s.resize_short),
        )
        return dataset if indices is None else Subset(dataset, list(indices))

    def backbone_features(self) -> Callable[[Tensor], Tensor]:
        """Pooled (B, D) features of the backbone, which is put on the device in eval mode."""
        self.runtime.place(self.backbone).eval()
        return lambda clips: global_average_pool(self.backbone(clips))


def _check_same(what: str, given: Any, recorded: Any, path: str) -> None:
    if given is not None and recorded is not None and str(given) != str(recorded):
        raise VtdlError(
            f"--{what} {given} does not match the encoder file {path}, which records "
            f"{what} {recorded}"
        )


def prepare_job(args: argparse.Namespace, protocol: str) -> Job:
    """Resolve the command line: settings, encoder (or scratch backbone), lists, runtime."""
    settings = resolve_settings(args.settings, protocol)
    set_up_process(args)
    lists, frames = Path(args.lists), Path(args.frames)
    if not frames.is_dir():
        raise VtdlError(f"--frames {frames}: directory not found")
    classes_file = lists / CLASSES_FILE
    classes = read_classes(classes_file)
    list_files = {part: split_list(lists, args.split, part) for part in LIST_PARTS}
    train_entries = read_list(list_files["train"])
    test_entries = read_list(list_files["test"])
    for part, entries in (("train", train_entries), ("test", test_entries)):
        bad = [e for e in entries if e.label >= len(classes)]
        if bad:
            raise VtdlError(
                f"{list_files[part]}: video {bad[0].path!r} has label {bad[0].label}, "
                f"but {classes_file} has {len(classes)} classes"
            )
        if not entries:
            raise VtdlError(f"{list_files[part]}: no videos")
    check_clip_fits(
        (e.frames for e in train_entries + test_entries),
        settings.clip_len,
        settings.stride,
        "downstream",
        split_dir(lists, args.split),
    )
    if protocol == "finetune":
        # How many videos the labelled subset holds does not depend on the seed's draw.
        per_class = settings.labels_per_class
        labelled = len(labelled_subset([e.label for e in train_entries], per_class, 0))
        if settings.batch_size > labelled:
            raise VtdlError(
                f"downstream.batch_size: {settings.batch_size} is more than the {labelled} "
                f"labelled training videos of {list_files['train']} "
                f"(downstream.labels_per_class {per_class}): allowed 1..{labelled}"
            )

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
    runtime = select_runtime(settings.device, settings.amp, settings.channels_last)
    source = (record or {}).get("source", {})
    return Job(
        protocol=protocol,
        dataset=args.dataset,
        split=args.split,
        seed=seed,
        method=method,
        backbone_name=backbone_name,
        encoder_path=str(args.encoder),
        encoder_sha256=sha256_file(args.encoder) if args.encoder != "none" else "none",
        pretrain_run_id=source.get("mlflow_run_id") or None,
        pretrain_dataset=pretrain_dataset,
        settings=settings,
        out=Path(args.out),
        classes=classes,
        train_labels=[e.label for e in train_entries],
        train_list_sha256=sha256_file(list_files["train"]),
        test_list_sha256=sha256_file(list_files["test"]),
        backbone=backbone,
        encoder_record=record,
        runtime=runtime,
        lists=lists,
        frames=frames,
        train_entries=train_entries,
        test_entries=test_entries,
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
        "--method",
        choices=list(METHODS),
        help="method tag (default: the encoder's; scratch for none)",
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
    add_stage_arguments(parser, "downstream")
