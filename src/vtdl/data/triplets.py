"""Temporal triplet sampling for VTDL pretraining (METHOD.md §1), as pure functions of frame counts.

A triplet is drawn from ONE video of `num_frames` frames: the anchor clip (`clip_len` frames,
`stride` apart, 0-based start), the positive (exactly the anchor's frames; only its spatial
augmentation differs, so no sampling is needed) and the temporal negative (a clip of the same
video at another start). Frames past the end wrap to the beginning (`clips.clip_indices`).

Anchor start samplers:
- "fixed": uniform over the true valid starts 0 .. num_frames - span (span = the clip's extent,
  `clip_span`); 0 when the video is shorter than the span (the clip then loops).
- "original": the original code's defect: the valid range is computed for 32 frames at the
  stride (0 .. num_frames - 32 * stride), so every video of at most 32 * stride frames (128 at
  stride 4) always starts at frame 0.

Negative rules:
- "original": t_n is drawn with the same sampler as the anchor; if |t_n - t_a| < min_gap it is
  shifted by num_frames // 3 (modulo num_frames). The two clips may overlap. The shift is
  applied to the drawn t_n, exactly as the original does, including its 1-based arithmetic
  (`original_negative_shift`); t_n differs from t_a by less than min_gap there, so this is the
  same as shifting t_a up to that difference.
- "non_overlapping": uniform over the valid starts (0 .. num_frames - span, whatever the anchor
  sampler) whose span does not overlap the anchor's. Two clips overlap when the frame ranges
  from their first to their last frame intersect; interleaved clips (same range, offset by less
  than the stride) count as overlapping because they show the same moment. When no valid start
  avoids the anchor (videos shorter than two spans), the start with the least overlap is used,
  which is the valid start farthest from the anchor (a random one of the two ends on a tie).
  For a video shorter than one span every clip covers every frame; the negative then starts
  half the video after the anchor ((t_a + num_frames // 2) % num_frames), the largest shift.
  `min_gap` is not used by this rule.
"""

from __future__ import annotations

import numpy as np

from vtdl.data.clips import clip_indices, clip_span
from vtdl.errors import VtdlError

__all__ = [
    "NEGATIVE_RULES",
    "ORIGINAL_SAMPLER_CLIP_LEN",
    "SAMPLERS",
    "clip_span",
    "last_start",
    "original_negative_shift",
    "sample_anchor_start",
    "sample_negative_start",
    "sample_triplet",
]

SAMPLERS = ("fixed", "original")
NEGATIVE_RULES = ("original", "non_overlapping")

# The original's start sampler computes its valid range as if clips were this many frames long.
ORIGINAL_SAMPLER_CLIP_LEN = 32


def _check_counts(num_frames: int, clip_len: int, stride: int) -> None:
    if num_frames < 1 or clip_len < 1 or stride < 1:
        raise ValueError(
            f"need num_frames, clip_len, stride >= 1; got {num_frames}, {clip_len}, {stride}"
        )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise VtdlError(f"pretrain.{name}: unknown value {value!r} (one of {', '.join(choices)})")


def last_start(num_frames: int, clip_len: int, stride: int, sampler: str = "fixed") -> int:
    """The largest start `sampler` can draw (starts are uniform over 0 .. last_start)."""
    _check_counts(num_frames, clip_len, stride)
    _check_choice("sampler", sampler, SAMPLERS)
    if sampler == "fixed":
        return max(num_frames - clip_span(clip_len, stride), 0)
    # The original draws randint(1, max(N - 32 * stride, 0) + 1) in 1-based frames.
    return max(num_frames - ORIGINAL_SAMPLER_CLIP_LEN * stride, 0)


def sample_anchor_start(
    num_frames: int, clip_len: int, stride: int, rng: np.random.Generator, sampler: str = "fixed"
) -> int:
    """Draw the anchor's 0-based start frame with `sampler` ("fixed" or "original")."""
    return int(rng.integers(0, last_start(num_frames, clip_len, stride, sampler) + 1))


def original_negative_shift(start: int, num_frames: int) -> int:
    """The original's fix-up of a too-close negative: start + num_frames // 3, modulo num_frames.

    The original works in 1-based frames and maps a result of 0 to frame 1, so in 0-based
    frames a start that would wrap onto the last frame becomes 0 instead.
    """
    one_based = (start + 1 + num_frames // 3) % num_frames
    return max(one_based - 1, 0)


def _overlaps(num_frames: int, anchor_start: int, span: int, candidates: np.ndarray) -> np.ndarray:
    """Frames shared by the anchor's span and each candidate's (non-wrapping) span."""
    covered = np.zeros(num_frames, dtype=np.int64)
    # The anchor's span may wrap (a caller-supplied start past the last valid one).
    covered[(anchor_start + np.arange(span)) % num_frames] = 1
    prefix = np.concatenate(([0], np.cumsum(covered)))
    return prefix[candidates + span] - prefix[candidates]


def sample_negative_start(
    num_frames: int,
    anchor_start: int,
    clip_len: int,
    stride: int,
    rng: np.random.Generator,
    rule: str = "original",
    min_gap: int = 2,
    sampler: str = "fixed",
) -> int:
    """Draw the temporal negative's 0-based start frame (see the module docstring for rules).

    `sampler` is the anchor's start sampler; the "original" rule draws the negative with it.
    """
    _check_counts(num_frames, clip_len, stride)
    _check_choice("negative", rule, NEGATIVE_RULES)
    if not 0 <= anchor_start < num_frames:
        raise ValueError(f"anchor_start {anchor_start} is outside 0..{num_frames - 1}")
    if rule == "original":
        start = sample_anchor_start(num_frames, clip_len, stride, rng, sampler)
        if abs(start - anchor_start) < min_gap:
            start = original_negative_shift(start, num_frames)
        return start

    span = clip_span(clip_len, stride)
    if num_frames < span:
        # Every clip loops over all frames; the farthest start is half the video away.
        return (anchor_start + num_frames // 2) % num_frames
    candidates = np.arange(num_frames - span + 1)
    overlap = _overlaps(num_frames, anchor_start, span, candidates)
    # With no overlap-free start this keeps the least-overlapping ones (the farthest end(s)).
    best = candidates[overlap == overlap.min()]
    return int(best[rng.integers(0, best.size)])


def sample_triplet(
    num_frames: int,
    clip_len: int,
    stride: int,
    rng: np.random.Generator,
    sampler: str = "fixed",
    negative_rule: str = "original",
    min_gap: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of one triplet: (anchor_indices, negative_indices), each (clip_len,) int64.

    The positive uses the anchor's indices (only its spatial augmentation differs). Indices are
    0-based and wrap modulo num_frames.
    """
    anchor = sample_anchor_start(num_frames, clip_len, stride, rng, sampler)
    negative = sample_negative_start(
        num_frames,
        anchor,
        clip_len,
        stride,
        rng,
        rule=negative_rule,
        min_gap=min_gap,
        sampler=sampler,
    )
    return (
        clip_indices(num_frames, anchor, clip_len, stride),
        clip_indices(num_frames, negative, clip_len, stride),
    )
