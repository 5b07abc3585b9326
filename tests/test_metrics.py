"""vtdl.metrics against small cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vtdl.metrics import (
    average_clip_probabilities,
    classification_metrics,
    confusion_matrix,
    mean_class_accuracy,
    recall_at_k,
    softmax,
    topk_accuracy,
)

# Four videos, four classes. Row ranks (best first): [2,1,0,3], [1,0,2,3], [3,2,1,0], [0,1,2,3].
SCORES = np.array(
    [
        [0.1, 0.3, 0.5, 0.0],
        [0.2, 0.7, 0.1, 0.0],
        [0.0, 0.1, 0.2, 0.9],
        [0.9, 0.05, 0.03, 0.02],
    ]
)
LABELS = np.array([1, 1, 0, 0])


def test_topk_accuracy_counts_the_true_label_within_the_k_best():
    # true label rank per row: 2nd, 1st, 4th, 1st
    assert topk_accuracy(SCORES, LABELS, 1) == 0.5
    assert topk_accuracy(SCORES, LABELS, 2) == 0.75
    assert topk_accuracy(SCORES, LABELS, 3) == 0.75
    assert topk_accuracy(SCORES, LABELS, 4) == 1.0
    # k above the number of classes is capped
    assert topk_accuracy(SCORES, LABELS, 5) == 1.0


def test_ties_break_towards_the_lower_class_and_give_no_free_credit():
    constant = np.zeros((3, 4))
    labels = np.array([0, 2, 3])
    assert topk_accuracy(constant, labels, 1) == pytest.approx(1 / 3)  # only class 0 counts
    assert topk_accuracy(constant, labels, 3) == pytest.approx(2 / 3)  # classes 0, 1, 2


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    with pytest.raises(ValueError):
        confusion_matrix(np.array([3]), np.array([0]), 3)


def test_mean_class_accuracy_ignores_classes_absent_from_the_test_set():
    labels = np.array([0, 0, 0, 0, 1])
    predictions = np.array([0, 0, 0, 0, 0])
    # class 0: 4/4, class 1: 0/1, class 2 absent (ignored, not a 0): mean of 1 and 0
    assert mean_class_accuracy(labels, predictions, 3) == 0.5
    # top-1 would be 0.8: the two metrics differ on unbalanced test sets
    assert mean_class_accuracy(np.array([2, 2, 1]), np.array([2, 0, 1]), 3) == pytest.approx(0.75)


def test_classification_metrics_names_and_values():
    metrics = classification_metrics(SCORES, LABELS)
    assert set(metrics) == {"top1", "top5", "meanclass"}
    assert metrics["top1"] == 0.5
    assert metrics["top5"] == 1.0
    # predictions [2, 1, 3, 0]: class 0 1/2, class 1 1/2
    assert metrics["meanclass"] == 0.5


def test_softmax_is_stable_and_normalised():
    probs = softmax(np.array([[1000.0, 1000.0], [0.0, math.log(3.0)]]))
    np.testing.assert_allclose(probs, [[0.5, 0.5], [0.25, 0.75]])


def test_multi_clip_averaging_averages_probabilities_not_logits():
    # Video of two clips: clip A is extremely sure of class 0, clip B fairly sure of class 1.
    logits = np.array([[[10.0, 0.0], [0.0, 1.0]]])
    probs = average_clip_probabilities(logits)
    p_a = softmax(np.array([10.0, 0.0]))
    p_b = softmax(np.array([0.0, 1.0]))
    np.testing.assert_allclose(probs[0], (p_a + p_b) / 2)
    assert probs.shape == (1, 2)
    # A case where the two rules disagree: one clip very sure of class 0, two fairly sure of
    # class 1. Mean logits [2, 1.33] pick class 0; mean probabilities [0.41, 0.59] pick 1.
    logits = np.array([[[6.0, 0.0], [0.0, 2.0], [0.0, 2.0]]])
    assert logits[0].mean(axis=0).argmax() == 0
    assert average_clip_probabilities(logits)[0].argmax() == 1


def test_recall_at_k_by_hand():
    # Gallery mean is 0 (symmetric gallery), so centring changes nothing: cosine on raw vectors.
    gallery = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    gallery_labels = np.array([0, 1, 2, 3])
    queries = np.array([[1.0, 0.1], [0.9, -0.2], [-0.1, -1.0]])
    query_labels = np.array([0, 3, 2])
    # Query 0 nearest: g0 (label 0) -> hit at 1.
    # Query 1 ranking: g0 (0.976), g3 (0.217), g2 (-0.217), g1 -> label 3 at rank 2.
    # Query 2 ranking: g3, g1 (0.0995), g0 (-0.0995), g2 -> label 2 at rank 4.
    recall = recall_at_k(queries, query_labels, gallery, gallery_labels, ks=(1, 2, 3, 4, 50))
    assert recall == {
        1: pytest.approx(1 / 3),
        2: pytest.approx(2 / 3),
        3: pytest.approx(2 / 3),
        4: 1.0,
        50: 1.0,
    }


def test_recall_centres_with_the_gallery_mean():
    # Gallery mean [2, 0]; centred gallery [-1, 1] (label 0) and [1, -1] (label 1).
    gallery = np.array([[1.0, 1.0], [3.0, -1.0]])
    gallery_labels = np.array([0, 1])
    query = np.array([[1.5, 0.3]])  # centred [-0.5, 0.3]: nearest is label 0
    # Raw cosine would pick label 1 (0.868 vs 0.832): the centring decides this case.
    raw = query @ gallery.T / np.linalg.norm(query) / np.linalg.norm(gallery, axis=1)
    assert raw.argmax() == 1
    assert recall_at_k(query, np.array([0]), gallery, gallery_labels, ks=(1,)) == {1: 1.0}
    # Centring uses the gallery's mean, never the queries': a single query centred on its own
    # mean would be the zero vector and match nothing in particular.
    two = np.array([[1.5, 0.3], [2.8, -0.5]])  # centred [-0.5, .3] -> 0, [.8, -.5] -> 1
    assert recall_at_k(two, np.array([0, 1]), gallery, gallery_labels, ks=(1,)) == {1: 1.0}


def test_recall_caps_k_at_the_gallery_size():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]])
    recall = recall_at_k(
        np.array([[1.0, 0.0]]), np.array([5]), gallery, np.array([0, 1]), ks=(1, 50)
    )
    assert recall == {1: 0.0, 50: 0.0}
    recall = recall_at_k(
        np.array([[1.0, 0.0]]), np.array([1]), gallery, np.array([0, 1]), ks=(1, 50)
    )
    assert recall == {1: 0.0, 50: 1.0}
