"""Clip loading: canonical split lists, clip frame indices, and a clip Dataset over frame files.

A clip is `clip_len` frames `stride` apart. Frames past the end of a video wrap around to its
beginning, so a video shorter than the clip span loops (as in the original VTDL code) instead
of being dropped or padded with a frozen last frame.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vtdl.data.framestore import FrameFile, ManifestChecksums, frame_file_path
from vtdl.errors import VtdlError
from vtdl.names import LIST_HEADER

MODES = ("random", "uniform")


@dataclass(frozen=True)
class VideoEntry:
    """One row of a canonical split list: a video, its 0-based label, class and frame count."""

    path: str
    label: int
    class_name: str
    frames: int


def _count(text: str) -> int | None:
    """A non-negative integer written in plain decimal digits, else None."""
    return int(text) if text.isascii() and text.isdigit() else None


def read_list(csv_path: str | os.PathLike) -> list[VideoEntry]:
    """Read a canonical split list (`path,label,class,frames`, written by `vtdl splits`).

    Raises VtdlError naming the file (and line) for a missing file, a wrong header or a
    malformed row.
    """
    csv_path = Path(csv_path)
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise VtdlError(f"{csv_path}: list file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise VtdlError(f"{csv_path}: cannot read list file: {err}") from None
    if not rows or tuple(rows[0]) != LIST_HEADER:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise VtdlError(f"{csv_path} line 1: expected header {','.join(LIST_HEADER)}, got {found}")
    entries = []
    for line, row in enumerate(rows[1:], start=2):
        where = f"{csv_path} line {line}"
        if len(row) != len(LIST_HEADER):
            raise VtdlError(f"{where}: expected {len(LIST_HEADER)} fields, got {len(row)}")
        path, label, class_name, frames = row
        if not path:
            raise VtdlError(f"{where}: empty path")
        if (label_value := _count(label)) is None:
            raise VtdlError(f"{where}: label {label!r} is not a non-negative integer")
        if (frames_value := _count(frames)) is None:
            raise VtdlError(f"{where}: frames {frames!r} is not a non-negative integer")
        entries.append(VideoEntry(path, label_value, class_name, frames_value))
    return entries


def clip_span(clip_len: int, stride: int) -> int:
    """Frames from the first to the last frame of a clip, inclusive."""
    return (clip_len - 1) * stride + 1


def clip_indices(num_frames: int, start: int, clip_len: int, stride: int) -> np.ndarray:
    """0-based frame indices of the clip starting at `start`; past the end they wrap to 0."""
    if num_frames < 1 or clip_len < 1 or stride < 1:
        raise ValueError(
            f"need num_frames, clip_len, stride >= 1; got {num_frames}, {clip_len}, {stride}"
        )
    return (start + stride * np.arange(clip_len, dtype=np.int64)) % num_frames


def uniform_starts(num_frames: int, clip_len: int, stride: int, num_clips: int) -> np.ndarray:
    """Evenly spaced clip starts for multi-clip testing.

    The first clip starts at frame 0 and the last one ends on the last frame; one clip is
    centred. A video shorter than the clip span gives start 0 for every clip (the clip loops).
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    last_start = max(num_frames - clip_span(clip_len, stride), 0)
    if num_clips == 1:
        return np.array([last_start // 2], dtype=np.int64)
    return np.round(np.linspace(0, last_start, num_clips)).astype(np.int64)


def to_float_cthw(video: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float32 (C, T, H, W) in [0, 1]: the default clip transform."""
    return video.permute(3, 0, 1, 2).float().div_(255.0)


class ClipDataset(Dataset):
    """Clips of the videos of a canonical split list, read from their frame files.

    Args:
        list_file: canonical list CSV (`path,label,class,frames`).
        frames_root: folder the list's paths are relative to (holding `<path>.frames`).
        clip_len: frames per clip (16).
        stride: temporal stride between clip frames (1).
        mode: "random": one clip per item, start drawn uniformly from the starts that fit in
            the video with torch's global RNG (so DataLoader worker seeding or a seeded
            DataLoader generator makes it reproducible); "uniform": `num_clips` evenly
            spaced clips stacked on a leading dimension (testing).
        num_clips: clips per item in uniform mode (must be 1 in random mode).
        transform: maps the uint8 (T, H, W, C) clip tensor to the model input; default
            `to_float_cthw`.

    Items are dicts {"video": tensor, "label": int, "index": int}.
    """

    def __init__(
        self,
        list_file: str | os.PathLike,
        frames_root: str | os.PathLike,
        clip_len: int = 16,
        stride: int = 1,
        mode: str = "random",
        num_clips: int = 1,
        transform: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if clip_len < 1 or stride < 1 or num_clips < 1:
            raise ValueError("clip_len, stride and num_clips must be >= 1")
        if mode == "random" and num_clips != 1:
            raise ValueError("random mode gives one clip per item; use num_clips=1")
        self.list_file = Path(list_file)
        self.frames_root = Path(frames_root)
        self.entries = read_list(self.list_file)
        if not self.entries:
            raise VtdlError(f"{self.list_file}: the list has no videos")
        self.clip_len, self.stride, self.mode, self.num_clips = clip_len, stride, mode, num_clips
        self.transform = transform or to_float_cthw
        # Each frame file is checked once per process against the checksum its extraction
        # manifest recorded: a file damaged since is refused, never trained on.
        self.checksums = ManifestChecksums(self.frames_root)

    def __len__(self) -> int:
        return len(self.entries)

    def _open(self, entry: VideoEntry) -> FrameFile:
        path = frame_file_path(self.frames_root, entry.path)
        if not path.is_file():
            raise VtdlError(
                f"{self.list_file}: video {entry.path!r}: frame file not found: {path} "
                "(re-run vtdl extract, or is frames_root wrong?)"
            )
        frames = FrameFile(path)
        try:
            self.checksums.verify(frames, entry.path)
        except BaseException:
            frames.close()
            raise
        if frames.num_frames == 0:
            frames.close()
            raise VtdlError(f"{self.list_file}: video {entry.path!r}: {path} holds no frames")
        return frames

    def _starts(self, num_frames: int) -> np.ndarray:
        if self.mode == "uniform":
            return uniform_starts(num_frames, self.clip_len, self.stride, self.num_clips)
        last_start = max(num_frames - clip_span(self.clip_len, self.stride), 0)
        return np.array([int(torch.randint(last_start + 1, ()).item())], dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        with self._open(entry) as frames:
            starts = self._starts(frames.num_frames)
            indices = np.concatenate(
                [clip_indices(frames.num_frames, s, self.clip_len, self.stride) for s in starts]
            )
            # One read for all clips: frames shared by overlapping clips are decoded once.
            data = torch.from_numpy(frames.read(indices))
        clips = data.view(len(starts), self.clip_len, *data.shape[1:])
        if self.mode == "random":
            video = self.transform(clips[0])
        else:
            video = torch.stack([self.transform(clip) for clip in clips])
        return {"video": video, "label": entry.label, "index": index}
