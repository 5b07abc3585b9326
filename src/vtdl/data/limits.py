"""Limits the data puts on clip parameters, shared by the stages and the job-graph checks.

Kept free of imports beyond `vtdl.errors`: every stage that samples clips imports it (so it is
one of their code inputs), and so does `vtdl.data.sizes`, which the Snakefile runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from vtdl.errors import VtdlError


def clip_span(clip_len: int, stride: int) -> int:
    """Frames from the first to the last frame of a clip (as vtdl.data.clips samples it)."""
    return (clip_len - 1) * stride + 1


def check_clip_fits(
    frame_counts: Iterable[int], clip_len: int, stride: int, section: str, where: object
) -> None:
    """Raise VtdlError when a clip of `section`.clip_len at `section`.stride is longer than
    every video of `where` (whose videos have `frame_counts` frames). A clip longer than some
    of the videos is fine: on those it loops."""
    longest = max(frame_counts, default=0)
    span = clip_span(clip_len, stride)
    if longest and span > longest:
        fits = (longest - 1) // stride + 1
        raise VtdlError(
            f"{section}.clip_len: {clip_len} frames at stride {stride} span {span} frames, "
            f"longer than every video of {where} (the longest has {longest}): allowed "
            f"{section}.clip_len 1..{fits} at {section}.stride {stride}"
        )
