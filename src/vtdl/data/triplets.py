"""Temporal triplet sampling for VTDL pretraining (docs/method.md §1), pure functions of lengths.

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

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vtdl import seeds
from vtdl.data.clips import ClipDataset, clip_indices, clip_span
from vtdl.data.limits import check_clip_fits
from vtdl.distributed import share_of_batches
from vtdl.errors import VtdlError

__all__ = [
    "NEGATIVE_RULES",
    "ORIGINAL_SAMPLER_CLIP_LEN",
    "SAMPLERS",
    "EpochShuffle",
    "TripletDataset",
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


class EpochShuffle(torch.utils.data.Sampler):
    """A seeded random order per epoch, yielding (epoch, index) keys for `TripletDataset`.

    The order of epoch e is a permutation drawn from (seed, e) alone, so a run resumed at an
    epoch boundary sees the same order; the sampler lives in the main process, so setting
    `epoch` there reaches persistent workers through the keys.

    Under data parallelism (`world_size` > 1) every rank draws the same permutation, cuts it
    into global batches of `batch_size` (the last, incomplete one dropped) and yields the
    `rank`-th contiguous share of each: the ranks' shares of a step, concatenated in rank
    order, are the single-process batch of that step (vtdl.distributed).
    """

    def __init__(
        self, size: int, seed: int, rank: int = 0, world_size: int = 1, batch_size: int = 1
    ) -> None:
        self.size, self.seed, self.epoch = size, seed, 0
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.share = batch_size // world_size

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.size
        return self.size // self.batch_size * self.share

    def __iter__(self):
        order = seeds.torch_generator(self.seed, seeds.EPOCH_ORDER, self.epoch)
        epoch = self.epoch
        indices = torch.randperm(self.size, generator=order).tolist()
        if self.world_size > 1:
            indices = share_of_batches(indices, self.batch_size, self.rank, self.world_size)
        return iter([(epoch, i) for i in indices])


class TripletDataset(Dataset):
    """Temporal triplets of the videos of a canonical split list, read from their frame files.

    Item i is {"anchor", "positive", "negative", "label", "index"}: the anchor and positive are
    the same frames under two independent spatial augmentations, the negative a clip of the
    same video at another start (`sample_triplet`); views that are not asked for are left out
    (moco needs no negative, the supervised reference only the anchor and its label).

    Randomness is a pure function of (seed, epoch, index): the same item is drawn whatever the
    number of DataLoader workers, and a run resumed at an epoch boundary draws exactly what an
    uninterrupted one would. The key of an item is its index (with the epoch set by
    `set_epoch`) or an (epoch, index) pair, which `EpochShuffle` yields so that persistent
    loader workers, whose copy of the dataset never sees `set_epoch`, draw the right epoch.

    Args:
        list_file, frames_root: canonical list CSV and the folder its paths are relative to.
        clip_len, stride: frames per clip and their temporal stride.
        augment: the spatial augmentation (a `vtdl.augment.ClipAugment`), applied per view.
        seed: the run's seed.
        views: which of "anchor", "positive", "negative" to return.
        sampler, negative_rule, min_gap: see `sample_triplet`.
    """

    VIEWS = ("anchor", "positive", "negative")

    def __init__(
        self,
        list_file: str | os.PathLike,
        frames_root: str | os.PathLike,
        clip_len: int,
        stride: int,
        augment: Callable[..., torch.Tensor],
        seed: int,
        views: tuple[str, ...] = VIEWS,
        sampler: str = "fixed",
        negative_rule: str = "non_overlapping",
        min_gap: int = 2,
    ) -> None:
        unknown = set(views) - set(self.VIEWS)
        if "anchor" not in views or unknown:
            raise ValueError(f"views must include 'anchor' and be among {self.VIEWS}: {views}")
        _check_choice("sampler", sampler, SAMPLERS)
        _check_choice("negative", negative_rule, NEGATIVE_RULES)
        # ClipDataset validates the list and opens frame files with clear errors.
        self.clips = ClipDataset(list_file, frames_root, clip_len, stride)
        check_clip_fits(
            (e.frames for e in self.clips.entries), clip_len, stride, "pretrain", list_file
        )
        self.clip_len, self.stride = clip_len, stride
        self.augment, self.seed, self.views = augment, seed, tuple(views)
        self.sampler, self.negative_rule, self.min_gap = sampler, negative_rule, min_gap
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        entry = self.clips.entries[index]
        rng = seeds.numpy_rng(self.seed, seeds.ITEM, epoch, index)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        with self.clips._open(entry) as frames:
            anchor, negative = sample_triplet(
                frames.num_frames,
                self.clip_len,
                self.stride,
                rng,
                sampler=self.sampler,
                negative_rule=self.negative_rule,
                min_gap=self.min_gap,
            )
            wanted = [anchor, negative] if "negative" in self.views else [anchor]
            # One read for both clips: frames they share are decoded once.
            data = torch.from_numpy(frames.read(np.concatenate(wanted)))
        anchor_frames = data[: self.clip_len]
        item: dict[str, Any] = {"label": entry.label, "index": index}
        item["anchor"] = self.augment(anchor_frames, generator)
        if "positive" in self.views:
            item["positive"] = self.augment(anchor_frames, generator)
        if "negative" in self.views:
            item["negative"] = self.augment(data[self.clip_len :], generator)
        return item
