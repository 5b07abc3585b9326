"""`vtdl linear`: a linear classifier on frozen encoder features (read from `vtdl features`).

- The features are those of the encoder in eval mode (global average pool of the last feature
  map), cached once per encoder by `vtdl features`; this job imports no torch.
- Training features: for each video of the labelled subset, the MEAN feature of its
  `test_clips` uniformly spaced, centre-cropped clips. Uniform clips rather than random
  augmented ones keep the probe deterministic and cheap (no augmentation noise to average
  away), and averaging clips covers the whole video as the test does.
- Features are standardised with the training features' mean and standard deviation.
- The classifier is multinomial logistic regression, trained full-batch in float64 with
  L-BFGS on mean cross-entropy + weight_decay/2 * ||W||^2 (bias not decayed), from zero
  weights: a convex problem with one answer, no seed involved.
- Test: each clip's feature goes through the classifier; video scores average the softmax of
  the centre clip (1clip) or of the `test_clips` uniform clips (Nclip).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from vtdl.downstream import cached
from vtdl.downstream.job import finish, log_confusion
from vtdl.metrics import (
    average_clip_probabilities,
    classification_metrics,
    confusion_matrix,
    ranking,
)
from vtdl.names import clip_metric

PROTOCOL = "linear"


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def fit_linear(
    features: np.ndarray, labels: np.ndarray, num_classes: int, weight_decay: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on (N, D) features; returns (W (D, C), b (C,)).

    Deterministic: float64, full batch, zero start, L-BFGS (scipy) with the exact gradient.
    """
    from scipy.optimize import minimize  # a tenth of a second; only this job needs it

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n, dim = x.shape
    onehot = np.zeros((n, num_classes))
    onehot[np.arange(n), y] = 1.0

    def loss_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        weight, bias = flat[: dim * num_classes].reshape(dim, num_classes), flat[-num_classes:]
        log_p = _log_softmax(x @ weight + bias)
        loss = -(log_p * onehot).sum() / n + 0.5 * weight_decay * float((weight**2).sum())
        residual = (np.exp(log_p) - onehot) / n
        grad_w = x.T @ residual + weight_decay * weight
        return loss, np.concatenate([grad_w.ravel(), residual.sum(axis=0)])

    start = np.zeros(dim * num_classes + num_classes)
    result = minimize(
        loss_and_grad,
        start,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": 1e-9, "ftol": 1e-12, "maxcor": 20},
    )
    flat = result.x
    return flat[: dim * num_classes].reshape(dim, num_classes), flat[-num_classes:]


class Standardiser:
    """(x - mean) / std with the statistics of the training features (std floored)."""

    def __init__(self, features: np.ndarray) -> None:
        self.mean = features.mean(axis=0)
        self.std = np.maximum(features.std(axis=0), 1e-6)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.std


def linear_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Run one linear-probe job; returns the result written to `--out`."""
    job, features = cached.prepare(args, PROTOCOL)
    probe = job.settings.linear
    indices = job.labelled_indices()
    job.extra_params = {"num_train_videos": len(indices)}
    with job.start_run(job.params()) as run:
        job.log_inputs(run, args.features, args.features)
        print(
            f"{job.run_name()}: {len(indices)} labelled videos, mean features of "
            f"{job.test_clips} clips each; MLflow run {run.run_id}",
            flush=True,
        )
        labels = features.train_labels[indices]
        train_features = features.train[indices].astype(np.float64).mean(axis=1)
        standardise = Standardiser(train_features)
        weight, bias = fit_linear(
            standardise(train_features),
            labels,
            job.num_classes,
            probe.weight_decay,
            probe.max_iter,
        )
        train_log_p = _log_softmax(standardise(train_features) @ weight + bias)
        run.log_metrics(
            {
                f"{job.prefix}/train_loss": float(
                    -train_log_p[np.arange(len(labels)), labels].mean()
                ),
                f"{job.prefix}/train_top1": float((train_log_p.argmax(axis=1) == labels).mean()),
            },
            step=1,
        )
        metrics: dict[str, float] = {}
        test_labels = features.test_labels
        by_clips = {
            1: features.test_centre[:, None, :],
            job.test_clips: features.test,
        }
        confusion = None
        for clips, clip_features in by_clips.items():
            logits = standardise(clip_features.astype(np.float64)) @ weight + bias
            scores = average_clip_probabilities(logits)
            for name, value in classification_metrics(scores, test_labels).items():
                metrics[f"{job.prefix}/{clip_metric(name, clips)}"] = value
            if clips == job.test_clips:
                predictions = ranking(scores)[:, 0]
                confusion = confusion_matrix(test_labels, predictions, job.num_classes)
        assert confusion is not None
        log_confusion(run, job, confusion)
        return finish(run, job, metrics)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cached.add_arguments(parser)


def run(args: argparse.Namespace) -> None:
    result = linear_probe(args)
    print(json.dumps(result, indent=2, sort_keys=True))
