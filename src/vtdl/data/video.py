"""Video encoding and decoding with PyAV (torchvision 0.29 has no video I/O).

PyAV bundles FFmpeg, so any container/codec FFmpeg reads works: avi/xvid, mp4/h264, webm, ...
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vtdl.errors import VtdlError
from vtdl.fsutil import atomic_path

# Encoder per container suffix: mpeg4 is what UCF101/HMDB51 .avi files hold (xvid/divx).
_CODEC_FOR_SUFFIX = {".avi": "mpeg4", ".mp4": "libx264", ".mkv": "libx264"}


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    codec: str | None = None,
    quality: int = 2,
) -> None:
    """Encode RGB uint8 frames of shape (H, W, 3) into a real video file, atomically.

    `quality` is mpeg4's qscale (1 best .. 31 worst) or x264's CRF divided by 2 (so 2 -> crf 4);
    small frames need high quality or the motion cues drown in block artefacts.
    """
    path = Path(path)
    codec = codec or _CODEC_FOR_SUFFIX.get(path.suffix.lower(), "mpeg4")
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        # The temporary name has a .tmp suffix, so name the container format explicitly.
        fmt = {".avi": "avi", ".mp4": "mp4", ".mkv": "matroska", ".webm": "webm"}.get(
            path.suffix.lower(), "avi"
        )
        with av.open(str(tmp), mode="w", format=fmt) as container:
            stream = None
            for frame in frames:
                if stream is None:
                    height, width = frame.shape[:2]
                    stream = container.add_stream(codec, rate=rate)
                    stream.width, stream.height = width, height
                    stream.pix_fmt = "yuv420p"
                    if codec == "mpeg4":
                        # Pin the quantiser (like ffmpeg's `-q:v`): the default rate control
                        # blurs small frames badly.
                        stream.codec_context.qmin = stream.codec_context.qmax = quality
                    elif codec == "libx264":
                        stream.options = {"crf": str(2 * quality), "preset": "veryfast"}
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            if stream is None:
                raise VtdlError(f"{path}: no frames to write")
            for packet in stream.encode():
                container.mux(packet)


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode a video's frames in order as RGB uint8 arrays (H, W, 3)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VtdlError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def probe_fps(path: str | os.PathLike) -> float:
    """Average frame rate of the first video stream (25.0, 29.97, ...)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VtdlError(f"{path}: no video stream")
        rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
        return float(rate) if rate else 0.0
