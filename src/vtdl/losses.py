"""Pretext losses and diagnostics of temporal discriminative learning (docs/method.md §5).

Pure functions of tensors: no module state, no side effects, so they are tested by hand and
reused by any training loop. Every function computes in float32 with autocast switched off:
a softmax over thousands of queue columns at temperature 0.07 amplifies bf16/fp16 rounding of
the dot products (an error of 4e-3 in a similarity becomes 0.06 in a logit).

Column layout of the logits, shared by every function here:

    column 0            q . k           the positive (same frames, other augmentation)
    columns 1 .. K      q . queue^T     keys of earlier batches (other videos)
    column K + 1        q . n           the temporal negative (same video, other time);
                                        present only when a negative is given
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _float32_no_autocast(device: torch.device) -> torch.autocast:
    """A context that runs the enclosed ops in the precision of their inputs (float32 here)."""
    return torch.autocast(device_type=device.type, enabled=False)


def _check_embeddings(q: Tensor, k: Tensor, n: Tensor | None) -> None:
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be (B, D); got {tuple(q.shape)} and {tuple(k.shape)}")
    if n is not None and n.shape != q.shape:
        raise ValueError(f"n must be (B, D) like q {tuple(q.shape)}; got {tuple(n.shape)}")


def temporal_info_nce(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    n: Tensor | None = None,
    tau: float = 0.07,
) -> tuple[Tensor, Tensor]:
    """InfoNCE over the positive, the queue and (optionally) one temporal negative per query.

    logits = [q.k, q.queue^T, q.n] / tau; the loss is the cross-entropy with target 0, i.e. the
    positive must out-score every queue key and the clip of the same video at another time.

    Args:
        q: (B, D) L2-normalised query embeddings (gradient flows through them).
        k: (B, D) L2-normalised key embeddings of the positives (treated as constants).
        queue: (K, D) L2-normalised keys of earlier batches, one key per row (constants).
        n: (B, D) L2-normalised embeddings of the temporal negatives, or None for plain MoCo.
            Gradient flows through n: the query encoder learns to push it away.
        tau: softmax temperature (0.07 in the original).

    Returns:
        loss: scalar float32 tensor, mean cross-entropy over the batch.
        logits: (B, 1 + K) or (B, 1 + K + 1) float32 tensor, already divided by tau.
    """
    _check_embeddings(q, k, n)
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, {q.shape[1]}); got {tuple(queue.shape)}")
    with _float32_no_autocast(q.device):
        q32 = q.float()
        # The key branch never carries gradient: detaching here makes that true for any caller.
        positive = (q32 * k.detach().float()).sum(dim=1, keepdim=True)
        columns = [positive, q32 @ queue.detach().float().t()]
        if n is not None:
            columns.append((q32 * n.float()).sum(dim=1, keepdim=True))
        logits = torch.cat(columns, dim=1) / tau
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits, target)
    return loss, logits


def triplet_margin(q: Tensor, k: Tensor, n: Tensor, margin: float = 1.0) -> Tensor:
    """Triplet margin loss max(0, |q - k| - |q - n| + margin) with Euclidean distances.

    The original computes it next to the InfoNCE loss but never adds it; it is kept here so a
    run can log it or add it with a weight (off by default).

    Args:
        q: (B, D) query (anchor) embeddings.
        k: (B, D) positive embeddings.
        n: (B, D) temporal-negative embeddings.
        margin: required gap between the negative and the positive distance (1.0 in the original).

    Returns:
        Scalar float32 tensor, the mean over the batch.
    """
    _check_embeddings(q, k, n)
    with _float32_no_autocast(q.device):
        return F.triplet_margin_loss(q.float(), k.float(), n.float(), margin=margin, p=2)


@torch.no_grad()
def pretext_metrics(logits: Tensor, has_negative: bool, tau: float) -> dict[str, Tensor]:
    """Diagnostics of the pretext task, cheap enough to log every step.

    Similarities are the raw cosine similarities (the logits times tau), so they read the same
    whatever the temperature.

    Args:
        logits: (B, 1 + K [+ 1]) logits from `temporal_info_nce`.
        has_negative: whether the last column is the temporal negative.
        tau: the temperature the logits were divided by.

    Returns:
        Detached 0-d float32 tensors (call float() when logging; keeping tensors avoids a
        device synchronisation per metric on a GPU):
        pos_sim: mean q.k.
        queue_sim: mean q.queue over all queue columns.
        instance_acc: fraction of queries whose positive out-scores every other column.
        neg_sim: mean q.n (only when has_negative).
        pos_beats_neg: fraction of queries with q.k > q.n (only when has_negative).
    """
    similarities = logits.detach().float() * tau
    queue_end = similarities.shape[1] - 1 if has_negative else similarities.shape[1]
    if queue_end < 2:
        raise ValueError(f"logits {tuple(logits.shape)} hold no queue column")
    positive = similarities[:, 0]
    metrics = {
        "pos_sim": positive.mean(),
        "queue_sim": similarities[:, 1:queue_end].mean(),
        # argmax returns the first maximum, so a tie with the positive counts as a hit.
        "instance_acc": (similarities.argmax(dim=1) == 0).float().mean(),
    }
    if has_negative:
        negative = similarities[:, -1]
        metrics["neg_sim"] = negative.mean()
        metrics["pos_beats_neg"] = (positive > negative).float().mean()
    return metrics
