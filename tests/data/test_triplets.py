"""Tests for vtdl.data.triplets: anchor and temporal-negative start sampling."""

from __future__ import annotations

import numpy as np
import pytest

from vtdl.data.triplets import (
    clip_span,
    last_start,
    original_negative_shift,
    sample_anchor_start,
    sample_negative_start,
    sample_triplet,
)
from vtdl.errors import VtdlError

L, S = 8, 2  # clip_len, stride used throughout: span 15
SPAN = 15


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _draws(fn, n: int, seed: int = 0) -> np.ndarray:
    rng = _rng(seed)
    return np.array([fn(rng) for _ in range(n)])


def _assert_roughly_uniform(values: np.ndarray, low: int, high: int) -> None:
    """Every value in low..high appears, each within 25 % of its expected count."""
    counts = np.bincount(values - low, minlength=high - low + 1)
    assert counts.size == high - low + 1  # nothing outside the range
    expected = values.size / counts.size
    assert counts.min() > 0.75 * expected and counts.max() < 1.25 * expected


def test_clip_span():
    assert clip_span(16, 4) == 61
    assert clip_span(L, S) == SPAN
    assert clip_span(1, 7) == 1


# ---------------------------------------------------------------- anchor start


@pytest.mark.parametrize("num_frames", [1, 5, SPAN - 1, SPAN])
def test_fixed_sampler_starts_at_zero_when_the_video_is_not_longer_than_the_span(num_frames):
    assert set(_draws(lambda r: sample_anchor_start(num_frames, L, S, r), 200)) == {0}


def test_fixed_sampler_is_uniform_over_the_valid_starts():
    n = 34  # valid starts 0..19
    values = _draws(lambda r: sample_anchor_start(n, L, S, r, sampler="fixed"), 8000)
    _assert_roughly_uniform(values, 0, n - SPAN)


@pytest.mark.parametrize("num_frames", [1, 20, 61, 100, 128])
def test_original_sampler_always_starts_at_zero_up_to_32_strides(num_frames):
    draws = _draws(lambda r: sample_anchor_start(num_frames, 16, 4, r, sampler="original"), 200)
    assert set(draws) == {0}
    # The fixed sampler does use the valid starts of those videos.
    if num_frames > clip_span(16, 4):
        fixed = _draws(lambda r: sample_anchor_start(num_frames, 16, 4, r), 200)
        assert fixed.max() > 0


def test_original_sampler_range_for_longer_videos():
    assert last_start(129, 16, 4, "original") == 1
    assert last_start(129, 16, 4, "fixed") == 129 - 61
    values = _draws(lambda r: sample_anchor_start(160, 16, 4, r, sampler="original"), 6000)
    _assert_roughly_uniform(values, 0, 160 - 128)


# ---------------------------------------------------------------- negative: original rule


def test_original_negative_shift_uses_the_original_1_based_arithmetic():
    assert original_negative_shift(0, 90) == 30
    assert original_negative_shift(70, 90) == 10  # (71 + 30) % 90 = 11 -> frame 11 -> index 10
    # 1-based result 0 becomes frame 1, i.e. index 0 rather than the last frame.
    assert original_negative_shift(6, 10) == 0
    assert original_negative_shift(0, 2) == 0  # num_frames // 3 == 0: no shift


@pytest.mark.parametrize("num_frames", [10, 90, 128])
def test_original_rule_on_short_videos_always_shifts_by_a_third(num_frames):
    # The original sampler gives both clips start 0, so the negative is always shifted.
    def draw(r):
        return sample_negative_start(num_frames, 0, 16, 4, r, rule="original", sampler="original")

    assert set(_draws(draw, 50)) == {original_negative_shift(0, num_frames)}


def test_original_rule_keeps_the_min_gap_and_may_overlap():
    n = 200
    rng = _rng(1)
    overlapping = 0
    for _ in range(2000):
        t_a = sample_anchor_start(n, L, S, rng)
        t_n = sample_negative_start(n, t_a, L, S, rng, rule="original", min_gap=2)
        assert 0 <= t_n < n
        assert abs(t_n - t_a) >= 2  # too-close draws were shifted by n // 3
        overlapping += abs(t_n - t_a) < SPAN
    assert overlapping > 0  # the original rule lets the two clips overlap


def test_original_rule_min_gap_controls_the_shift():
    n, t_a = 60, 20
    for seed in range(30):
        drawn = sample_anchor_start(n, L, S, _rng(seed))
        never = sample_negative_start(n, t_a, L, S, _rng(seed), rule="original", min_gap=0)
        always = sample_negative_start(n, t_a, L, S, _rng(seed), rule="original", min_gap=n)
        assert never == drawn
        assert always == original_negative_shift(drawn, n)


# ---------------------------------------------------------------- negative: non-overlapping


@pytest.mark.parametrize("num_frames", [2 * SPAN, 40, 100])
def test_non_overlapping_negative_never_overlaps_when_possible(num_frames):
    rng = _rng(2)
    last = num_frames - SPAN
    disjoint_seen = 0
    for _ in range(500):
        a_idx, n_idx = sample_triplet(num_frames, L, S, rng, negative_rule="non_overlapping")
        t_a, t_n = int(a_idx[0]), int(n_idx[0])
        assert a_idx[-1] == t_a + SPAN - 1 and n_idx[-1] == t_n + SPAN - 1  # no wrap
        possible = t_a >= SPAN or t_a + SPAN <= last
        if possible:
            # first..last frame ranges are disjoint
            assert t_n + SPAN <= t_a or t_a + SPAN <= t_n
            disjoint_seen += 1
        else:
            assert abs(t_n - t_a) == max(t_a, last - t_a)  # the farthest valid start
    assert disjoint_seen > 0


def test_non_overlapping_negative_is_uniform_over_the_allowed_starts():
    n, t_a = 60, 20  # valid starts 0..45; allowed: 0..5 and 35..45
    values = _draws(
        lambda r: sample_negative_start(n, t_a, L, S, r, rule="non_overlapping"), 8500, seed=3
    )
    allowed = list(range(0, 6)) + list(range(35, 46))
    assert set(values) == set(allowed)
    counts = np.array([(values == v).sum() for v in allowed])
    expected = values.size / len(allowed)
    assert counts.min() > 0.75 * expected and counts.max() < 1.25 * expected


def test_non_overlapping_falls_back_to_the_farthest_start():
    n = SPAN + 6  # valid starts 0..6: every pair of clips overlaps
    assert {
        sample_negative_start(n, 1, L, S, _rng(s), rule="non_overlapping") for s in range(20)
    } == {6}
    assert {
        sample_negative_start(n, 5, L, S, _rng(s), rule="non_overlapping") for s in range(20)
    } == {0}
    # Anchor in the middle: both ends are equally far, either may be chosen.
    assert {
        sample_negative_start(n, 3, L, S, _rng(s), rule="non_overlapping") for s in range(40)
    } == {0, 6}
    # Exactly one span long: the only valid start.
    assert sample_negative_start(SPAN, 0, L, S, _rng(0), rule="non_overlapping") == 0


@pytest.mark.parametrize(("num_frames", "anchor", "expected"), [(10, 0, 5), (10, 7, 2), (1, 0, 0)])
def test_non_overlapping_on_videos_shorter_than_the_span(num_frames, anchor, expected):
    got = sample_negative_start(num_frames, anchor, L, S, _rng(0), rule="non_overlapping")
    assert got == expected


# ---------------------------------------------------------------- triplets


@pytest.mark.parametrize("sampler", ["fixed", "original"])
@pytest.mark.parametrize("rule", ["original", "non_overlapping"])
@pytest.mark.parametrize("num_frames", [1, 7, SPAN, 40, 300])
def test_triplet_indices_are_in_range_and_follow_the_stride(sampler, rule, num_frames):
    rng = _rng(4)
    for _ in range(50):
        anchor, negative = sample_triplet(
            num_frames, L, S, rng, sampler=sampler, negative_rule=rule
        )
        for idx in (anchor, negative):
            assert idx.shape == (L,) and idx.dtype == np.int64
            assert idx.min() >= 0 and idx.max() < num_frames
            assert np.array_equal(idx, (idx[0] + S * np.arange(L)) % num_frames)


def test_short_videos_wrap_around():
    anchor, negative = sample_triplet(7, L, S, _rng(0), negative_rule="non_overlapping")
    assert anchor.tolist() == [0, 2, 4, 6, 1, 3, 5, 0]
    assert negative.tolist() == [3, 5, 0, 2, 4, 6, 1, 3]


def test_triplets_are_deterministic_for_a_seed():
    def run(seed):
        rng = _rng(seed)
        return [np.concatenate(sample_triplet(500, 16, 4, rng)) for _ in range(20)]

    assert all(np.array_equal(a, b) for a, b in zip(run(5), run(5), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(run(5), run(6), strict=True))


def test_bad_arguments():
    with pytest.raises(VtdlError, match="pretrain.sampler"):
        sample_anchor_start(100, L, S, _rng(), sampler="uniform")
    with pytest.raises(VtdlError, match="pretrain.negative"):
        sample_negative_start(100, 0, L, S, _rng(), rule="far")
    with pytest.raises(ValueError, match="anchor_start"):
        sample_negative_start(100, 100, L, S, _rng())
    with pytest.raises(ValueError, match="num_frames"):
        sample_triplet(0, L, S, _rng())
