"""Pretext losses: InfoNCE with a temporal negative, the triplet margin, the logged diagnostics."""

import math

import pytest
import torch
import torch.nn.functional as F

from vtdl.losses import pretext_metrics, temporal_info_nce, triplet_margin


def _cross_entropy_target0(row: list[float]) -> float:
    return -row[0] + math.log(sum(math.exp(x) for x in row))


def test_info_nce_matches_hand_computed_cross_entropy():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    queue = torch.tensor([[0.0, 1.0]])
    n = torch.tensor([[0.8, 0.6], [1.0, 0.0]])
    tau = 0.5
    # Row 0: q.k = 0.6, q.queue = 0, q.n = 0.8; row 1: 0.6, 1, 0 (all divided by tau).
    expected_logits = [[1.2, 0.0, 1.6], [1.2, 2.0, 0.0]]

    loss, logits = temporal_info_nce(q, k, queue, n, tau=tau)

    torch.testing.assert_close(logits, torch.tensor(expected_logits))
    expected = sum(_cross_entropy_target0(row) for row in expected_logits) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_without_negative_has_no_last_column():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])

    loss, logits = temporal_info_nce(q, k, queue, tau=0.5)

    expected_logits = [[1.2, 0.0, -2.0], [1.2, 2.0, 0.0]]
    torch.testing.assert_close(logits, torch.tensor(expected_logits))
    expected = sum(_cross_entropy_target0(row) for row in expected_logits) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("with_negative", [True, False])
def test_logits_have_one_column_per_positive_queue_key_and_negative(with_negative):
    gen = torch.Generator().manual_seed(0)
    q, k, n = (F.normalize(torch.randn(4, 5, generator=gen), dim=1) for _ in range(3))
    queue = F.normalize(torch.randn(7, 5, generator=gen), dim=1)

    _, logits = temporal_info_nce(q, k, queue, n if with_negative else None)

    assert logits.shape == (4, 1 + 7 + int(with_negative))
    assert logits.dtype == torch.float32


def test_gradient_reaches_query_and_negative_but_not_keys():
    gen = torch.Generator().manual_seed(1)
    q, k, n = (torch.randn(3, 4, generator=gen).requires_grad_() for _ in range(3))
    queue = torch.randn(5, 4, generator=gen).requires_grad_()

    loss, _ = temporal_info_nce(q, k, queue, n)
    loss.backward()

    assert q.grad is not None and q.grad.abs().sum() > 0
    assert n.grad is not None and n.grad.abs().sum() > 0
    assert k.grad is None
    assert queue.grad is None


def test_loss_is_computed_in_float32_under_autocast():
    gen = torch.Generator().manual_seed(2)
    q, k, n = (F.normalize(torch.randn(4, 16, generator=gen), dim=1) for _ in range(3))
    queue = F.normalize(torch.randn(9, 16, generator=gen), dim=1)
    q16, k16, n16, queue16 = (t.bfloat16() for t in (q, k, n, queue))

    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logits = temporal_info_nce(q16, k16, queue16, n16)

    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    # Same numbers as a float32 computation on the (already rounded) bf16 inputs.
    ref_loss, ref_logits = temporal_info_nce(q16.float(), k16.float(), queue16.float(), n16.float())
    torch.testing.assert_close(logits, ref_logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)


def test_info_nce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="queue"):
        temporal_info_nce(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="n must be"):
        temporal_info_nce(
            torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(5, 4), torch.zeros(3, 4)
        )


def test_triplet_margin_matches_hand_computed_hinge():
    q = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    k = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    n = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    # Row 0: max(0, 5 - 1 + 1) = 5; row 1: max(0, 1 - 3 + 1) = 0.
    assert triplet_margin(q, k, n, margin=1.0).item() == pytest.approx(2.5, abs=1e-4)
    assert triplet_margin(q, k, n, margin=3.0).item() == pytest.approx((7 + 1) / 2, abs=1e-4)


def test_metrics_undo_the_temperature_and_rank_the_positive():
    similarities = torch.tensor([[0.9, 0.1, 0.3, 0.5], [0.2, 0.4, 0.0, 0.6]])
    tau = 0.07

    metrics = pretext_metrics(similarities / tau, has_negative=True, tau=tau)

    assert set(metrics) == {"pos_sim", "queue_sim", "neg_sim", "instance_acc", "pos_beats_neg"}
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())
    assert metrics["pos_sim"].item() == pytest.approx(0.55, abs=1e-6)
    assert metrics["queue_sim"].item() == pytest.approx(0.2, abs=1e-6)
    assert metrics["neg_sim"].item() == pytest.approx(0.55, abs=1e-6)
    assert metrics["instance_acc"].item() == 0.5  # row 1 ranks its negative first
    assert metrics["pos_beats_neg"].item() == 0.5  # row 0: 0.9 > 0.5; row 1: 0.2 < 0.6


def test_metrics_without_negative_treat_every_other_column_as_queue():
    similarities = torch.tensor([[0.9, 0.1, 0.3, 0.5], [0.2, 0.4, 0.0, 0.6]])

    metrics = pretext_metrics(similarities / 0.2, has_negative=False, tau=0.2)

    assert set(metrics) == {"pos_sim", "queue_sim", "instance_acc"}
    assert metrics["queue_sim"].item() == pytest.approx((0.1 + 0.3 + 0.5 + 0.4 + 0.0 + 0.6) / 6)
    assert metrics["instance_acc"].item() == 0.5
