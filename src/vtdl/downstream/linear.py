"""`vtdl linear`: a linear classifier on frozen encoder features.

- Encoder frozen in eval mode (batch norm uses its running statistics); a feature is the global
  average pool of the last feature map.
- Training features: for each video of the labelled subset, the MEAN feature of
  `linear.train_clips` uniformly spaced, centre-cropped clips. Uniform clips rather than random
  augmented ones keep the probe deterministic and cheap (one pass, no augmentation noise to
  average away), and averaging several clips covers the whole video as the test does.
- Features are standardised with the training features' mean and standard deviation.
- The classifier is multinomial logistic regression, trained full-batch in float64 with
  L-BFGS (strong-Wolfe line search) on mean cross-entropy + weight_decay/2 * ||W||^2
  (bias not decayed), from zero weights: a convex problem with one answer, no seed involved.
- Test: each clip's feature goes through the classifier; video scores average the softmax of
  the centre clip (1clip) or of `test_clips` uniform clips (Nclip).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vtdl import tracking
from vtdl.downstream import common

PROTOCOL = "linear"


def fit_linear(
    features: np.ndarray, labels: np.ndarray, num_classes: int, weight_decay: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on (N, D) features; returns (W (D, C), b (C,)).

    Deterministic: float64, full batch, zero start, L-BFGS.
    """
    x = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach().numpy(), bias.detach().numpy()


class Standardiser:
    """(x - mean) / std with the statistics of the training features (std floored)."""

    def __init__(self, features: np.ndarray) -> None:
        self.mean = features.mean(axis=0)
        self.std = np.maximum(features.std(axis=0), 1e-6)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.std


def linear_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Run one linear-probe job; returns the result written to `--out`."""
    job = common.prepare_job(args, PROTOCOL)
    probe = job.settings[PROTOCOL]
    indices = job.labelled_indices()
    job.extra_params = {"num_train_videos": len(indices)}
    features_of = job.backbone_features()
    with tracking.start_run(PROTOCOL, job.params(), job.tags(), run_name=job.run_name()) as run:
        print(
            f"{job.run_name()}: {len(indices)} labelled videos, features of "
            f"{probe['train_clips']} clips each; MLflow run {run.run_id}",
            flush=True,
        )
        clip_features, labels = common.clip_outputs(
            features_of,
            job.eval_dataset("train", probe["train_clips"], indices),
            job,
            "linear train features",
        )
        train_features = clip_features.astype(np.float64).mean(axis=1)
        standardise = Standardiser(train_features)
        weight, bias = fit_linear(
            standardise(train_features),
            labels,
            job.num_classes,
            probe["weight_decay"],
            probe["max_iter"],
        )
        train_logits = standardise(train_features) @ weight + bias
        train_top1 = float((train_logits.argmax(axis=1) == labels).mean())
        train_loss = float(
            F.cross_entropy(torch.from_numpy(train_logits), torch.from_numpy(labels).long())
        )
        run.log_metrics(
            {f"{job.prefix}/train_loss": train_loss, f"{job.prefix}/train_top1": train_top1},
            step=1,
        )

        def clip_logits(clips: Tensor) -> Tensor:
            feats = features_of(clips).double().cpu().numpy()
            return torch.from_numpy(standardise(feats) @ weight + bias)

        metrics, confusion = common.classification_report(clip_logits, job)
        common.log_confusion(run, job, confusion)
        return common.finish(run, job, metrics)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_arguments(parser)


def run(args: argparse.Namespace) -> None:
    result = linear_probe(args)
    print(json.dumps(result, indent=2, sort_keys=True))
