"""Helpers of the tests that run pretraining jobs in process."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vtdl import pretrain as pretrain_stage
from vtdl.config import load_settings

ROOT = Path(__file__).resolve().parents[1]


def tiny_settings(**changes: Any) -> dict[str, Any]:
    """The shipped pretrain settings cut down to the `tiny_set` fixture's 12 videos: batch 4
    (3 steps per epoch), queue 6, 3 epochs with a checkpoint each, a small3d of 4-8-8-16."""
    settings = load_settings(str(ROOT / "params.yaml"), "pretrain")
    settings.update(
        clip_len=4,
        stride=2,
        crop_size=16,
        resize_short=18,
        batch_size=4,
        queue_size=6,
        epochs=3,
        checkpoint_every=1,
        num_workers=0,
        backbone_options={"small3d": {"channels": [4, 8, 8, 16]}},
    )
    settings.update(changes)
    return settings


def pretrain_args(
    root: Path, frames: Path, lists: Path, out: str, method: str = "vtdl"
) -> argparse.Namespace:
    """The parsed command line of a small3d job (seed 3, data set "tiny") writing to root/out."""
    return argparse.Namespace(
        method=method,
        backbone="small3d",
        seed=3,
        dataset="tiny",
        lists=str(lists),
        frames=str(frames),
        out=str(root / out),
        threads=1,
    )


def pretrain_argv(
    root: Path, frames: Path, lists: Path, out: str, settings: dict[str, Any]
) -> list[str]:
    """The same job as `pretrain_args` as a `vtdl` command line, settings included."""
    args = pretrain_args(root, frames, lists, out)
    options = ("method", "backbone", "seed", "dataset", "lists", "frames", "out", "threads")
    argv = [item for name in options for item in (f"--{name}", str(getattr(args, name)))]
    return ["pretrain", *argv, "--settings", json.dumps(settings)]


def interrupt_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> Callable[[], None]:
    """Make pretraining jobs stop with KeyboardInterrupt when they start epoch `epoch` + 1
    (after the checkpoint of epoch `epoch`); returns the function that lifts it."""
    original = pretrain_stage._Job.train_epoch

    def interrupted(self, run):
        if self.epoch == epoch:
            raise KeyboardInterrupt
        return original(self, run)

    monkeypatch.setattr(pretrain_stage._Job, "train_epoch", interrupted)
    return lambda: monkeypatch.setattr(pretrain_stage._Job, "train_epoch", original)
