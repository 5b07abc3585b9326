"""Multi-clip evaluation of a downstream job: per-clip outputs of every video, and the 1-clip
and N-clip video-level metrics with the N-clip confusion matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vtdl.downstream.common import Job
from vtdl.metrics import (
    average_clip_probabilities,
    classification_metrics,
    confusion_matrix,
    ranking,
)
from vtdl.names import clip_metric
from vtdl.progress import progress


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
    workers = job.settings.num_workers
    loader = DataLoader(
        dataset,
        batch_size=job.settings.eval_batch_size,
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
            metrics[f"{job.prefix}/{clip_metric(name, clips)}"] = value
        if clips == job.test_clips:
            confusion = confusion_matrix(labels, ranking(scores)[:, 0], job.num_classes)
    assert confusion is not None
    return metrics, confusion
