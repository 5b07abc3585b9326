"""Evaluation metrics of the downstream protocols, as pure functions of numpy arrays.

Every accuracy is a fraction in [0, 1] (not a percentage). Conventions that decide results:

- Ranks break ties by the lower class (or gallery) index, so a model that outputs constant
  scores is not credited with every class in its top-k.
- Mean per-class accuracy averages the recall of the classes that occur in the test labels;
  a class without test videos has no accuracy and is ignored (not counted as 0).
- Multi-clip testing averages the softmax probabilities of a video's clips, then scores the
  average (the video-level prediction of docs/method.md §7), never the clip-level predictions.
- Retrieval centres both query and gallery features with the GALLERY mean (the test set's
  statistics stay unused), L2-normalises them and ranks the gallery by cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RETRIEVAL_KS = (1, 5, 10, 20, 50)


def _scores_and_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(
            f"expected scores (N, C) and labels (N,), got {scores.shape} and {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in 0..{scores.shape[1] - 1}")
    return scores, labels


def ranking(scores: np.ndarray) -> np.ndarray:
    """Column indices of each row sorted by descending score; ties keep the lower index first."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose true label is among the k highest scores.

    Args:
        scores: (N, C) class scores (logits or probabilities; only their order matters).
        labels: (N,) true classes in 0..C-1.
        k: ranks counted; capped at C (top-5 of a 3-class problem is top-3, i.e. 1.0).
    """
    scores, labels = _scores_and_labels(scores, labels)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if labels.size == 0:
        return float("nan")
    top = ranking(scores)[:, : min(k, scores.shape[1])]
    return float((top == labels[:, None]).any(axis=1).mean())


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def mean_class_accuracy(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    """Mean over the classes present in `labels` of the fraction of their videos predicted right.

    Classes absent from the test labels are ignored: they have no accuracy to average.
    """
    matrix = confusion_matrix(labels, predictions, num_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(matrix)[present] / support[present]).mean())


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def average_clip_probabilities(clip_logits: np.ndarray) -> np.ndarray:
    """(V, N, C) logits of N clips per video -> (V, C) mean of the clips' softmax probabilities.

    Averaging probabilities (not logits) is the protocol: one over-confident clip cannot
    outvote the others by the size of its logits alone.
    """
    clip_logits = np.asarray(clip_logits, dtype=np.float64)
    if clip_logits.ndim != 3:
        raise ValueError(f"expected clip logits (V, N, C), got shape {clip_logits.shape}")
    return softmax(clip_logits, axis=-1).mean(axis=1)


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """{"top1", "top5", "meanclass"} of video-level scores (N, C) against labels (N,)."""
    scores, labels = _scores_and_labels(scores, labels)
    predictions = ranking(scores)[:, 0]
    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "meanclass": mean_class_accuracy(labels, predictions, scores.shape[1]),
    }


def _centre_normalise(features: np.ndarray, mean: np.ndarray) -> np.ndarray:
    centred = features - mean
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.maximum(norms, 1e-12)


def nearest_neighbours(
    query_features: np.ndarray, gallery_features: np.ndarray, k: int
) -> np.ndarray:
    """(Q, min(k, G)) gallery indices of each query's k nearest, nearest first: both sets
    centred with the gallery mean and L2-normalised, ranked by cosine similarity (ties: lower
    gallery index first). The ranking `recall_at_k` scores."""
    query = np.asarray(query_features, dtype=np.float64)
    gallery = np.asarray(gallery_features, dtype=np.float64)
    mean = gallery.mean(axis=0, keepdims=True)
    similarity = _centre_normalise(query, mean) @ _centre_normalise(gallery, mean).T
    return ranking(similarity)[:, : min(k, len(gallery))]


def recall_at_k(
    query_features: np.ndarray,
    query_labels: np.ndarray,
    gallery_features: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] = RETRIEVAL_KS,
) -> dict[int, float]:
    """Nearest-neighbour retrieval recall: {k: fraction of queries with a same-class hit in top k}.

    Both feature sets are centred with the gallery mean and L2-normalised; the gallery is ranked
    by cosine similarity (ties: lower gallery index first). A query counts as a hit at k when
    any of its k nearest gallery items has its label. k is capped at the gallery size, so
    R@50 of a 30-video gallery is R@30 (the key stays 50).
    """
    query = np.asarray(query_features, dtype=np.float64)
    gallery = np.asarray(gallery_features, dtype=np.float64)
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"feature shapes {query.shape} and {gallery.shape} do not match")
    if query_labels.shape != (len(query),) or gallery_labels.shape != (len(gallery),):
        raise ValueError("one label per query and per gallery item is needed")
    if len(gallery) == 0:
        raise ValueError("the gallery is empty")
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {list(ks)}")
    if len(query) == 0:
        return {k: float("nan") for k in ks}
    order = nearest_neighbours(query, gallery, max(ks))
    hits = gallery_labels[order] == query_labels[:, None]  # (Q, kmax)
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), np.iinfo(np.int64).max)
    return {k: float((first_hit < min(k, len(gallery))).mean()) for k in ks}
