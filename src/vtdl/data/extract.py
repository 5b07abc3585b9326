"""`vtdl extract`: decode videos into per-video frame files, one shard (class folder) per job.

A shard is a top-level class folder (UCF101, HMDB51) or a `<split>/<class>` folder (Kinetics).
Its output `<out>/<shard>/` holds one `.frames` file per video (see `vtdl.data.framestore`) and a
`manifest.json` (per video: frame count, sizes, the source's SHA-256 and the frame file's
checksum, which the loader verifies); the folder is swapped in as a whole, so a failed or killed
job never leaves a partial shard and never damages the previous one.

Every non-hidden file of a shard folder is taken to be a video. A file that is empty, is not a
video, cannot be decoded, or decodes to clearly fewer frames than its container declares
(truncated) is a bad file. `on_error="fail"` examines every file and then raises one error
listing each bad file; `on_error="skip"` leaves them out, lists them in the manifest's `skipped`
and on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from vtdl.data.framestore import CODECS, SUFFIX, write_frame_file
from vtdl.errors import VtdlError
from vtdl.fsutil import atomic_dir, atomic_write_json, escapes, sha256_file
from vtdl.progress import progress

FORMATS = ("ucf101", "hmdb51", "kinetics")
ON_ERROR = ("fail", "skip")
# Folder levels below the videos root that make a shard: <class>, or <split>/<class>.
_SHARD_DEPTH = {"ucf101": 1, "hmdb51": 1, "kinetics": 2}

# Truncation check. Real UCF101/HMDB51/Kinetics files often decode a few frames fewer than
# their container declares (a broken last packet, an mp4 edit list trimming the pre-roll), so
# only a larger shortfall counts as truncated: more than 8 frames AND more than 5% of the
# declared count (10% when the count is only estimated from a duration, which can include
# audio or rounding). A half-written file misses far more. The 8 frames shrink to a quarter of
# the declared count for short clips: a 12-frame video that decodes 5 frames is truncated.
_MISSING_FRAMES_OK = 8
_MISSING_FRACTION_OK = 0.05
_MISSING_FRACTION_OK_ESTIMATED = 0.10
_MISSING_FRACTION_OK_SHORT = 0.25

# FFmpeg demuxers that happily "decode" files that are not videos: text shown as ANSI art
# (a stray .txt file becomes a 3-frame video), text-art formats, and single images.
_NOT_VIDEO_DEMUXERS = {"tty", "bin", "xbin", "adf", "idf", "image2"}

# swscale's area filter averages every source pixel when shrinking (no aliasing of fine
# texture) and acts like bilinear when enlarging.
_INTERPOLATION = "AREA"


class BadVideo(Exception):
    """A source file that cannot be extracted; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise VtdlError(f"--format: unknown data set format {fmt!r}; expected one of {FORMATS}")


def _iter_files(folder: Path) -> Iterator[str]:
    """Non-hidden files below `folder` (any depth), as POSIX paths relative to it."""
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(_is_hidden(part) for part in rel.split("/")):
            yield rel


def _files_below(folder: Path) -> list[str]:
    return sorted(_iter_files(folder))


def list_shards(fmt: str, videos_root: str | Path) -> list[str]:
    """The extraction shards of a videos root, sorted.

    ucf101 / hmdb51: each top-level class folder; kinetics: each `<split>/<class>` folder.
    Hidden folders and folders without any file are not shards (so e.g. Kinetics'
    `annotations/` folder of CSV files is ignored).
    """
    _check_format(fmt)
    root = Path(videos_root)
    if not root.is_dir():
        raise VtdlError(f"{root}: videos directory not found")
    folders = [root]
    for _ in range(_SHARD_DEPTH[fmt]):
        folders = [
            child
            for folder in folders
            for child in folder.iterdir()
            if child.is_dir() and not _is_hidden(child.name)
        ]
    return sorted(f.relative_to(root).as_posix() for f in folders if next(_iter_files(f), None))


def _check_shard(fmt: str, shard: str) -> str:
    parts = shard.strip("/").split("/")
    depth = _SHARD_DEPTH[fmt]
    if len(parts) != depth or any(p in ("", ".", "..") or _is_hidden(p) for p in parts):
        expected = "<class>" if depth == 1 else "<split>/<class>"
        raise VtdlError(f"--shard {shard!r}: a {fmt} shard is a folder {expected}")
    return "/".join(parts)


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled to `short_side`, aspect kept; 0 keeps the size."""
    if short_side == 0:
        return width, height
    if width <= height:
        return short_side, max(1, int(height * short_side / width + 0.5))
    return max(1, int(width * short_side / height + 0.5)), short_side


@dataclass
class _SourceInfo:
    fps: float
    declared: int | None  # frame count the container declares (or its duration implies)
    estimated: bool  # declared comes from a duration, not a frame count


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return text.splitlines()[0] if text else type(err).__name__


def _open_video(src: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open `src` and pick its video stream, or raise BadVideo."""
    try:
        size = src.stat().st_size
        if size == 0:
            raise BadVideo("empty file (0 bytes)")
        container = av.open(str(src))
    except (av.error.FFmpegError, OSError) as err:
        raise BadVideo(f"not a readable video ({_reason(err)})") from None
    try:
        demuxers = set(container.format.name.split(","))
        if demuxers & _NOT_VIDEO_DEMUXERS or any(d.endswith("_pipe") for d in demuxers):
            raise BadVideo(f"not a video (FFmpeg reads it as {container.format.name!r})")
        # Not necessarily stream 0: audio may come first, and an mp4's cover art is a
        # one-picture "video" stream flagged attached_pic.
        streams = [
            s
            for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic
        ]
        if not streams:
            raise BadVideo("no video stream")
    except BaseException:
        container.close()
        raise
    return container, streams[0]


def _source_info(container: av.container.InputContainer, stream: Any) -> _SourceInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.frames > 0:
        return _SourceInfo(fps, stream.frames, False)
    # webm/mkv declare no frame count; a duration times the rate still exposes truncation.
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        seconds = 0.0
    declared = int(seconds * fps + 0.5) if seconds > 0 and fps > 0 else None
    return _SourceInfo(fps, declared, True)


class _DecodedFrames:
    """Iterates a stream's frames as RGB uint8 (H, W, 3), resized and upright.

    Scaling and the YUV->RGB conversion happen in one swscale call inside FFmpeg (much faster
    than resizing in Python). The output size is fixed by the first frame, so a stream whose
    resolution changes midway still gives equally sized frames. A decode error ends the
    iteration and is kept in `error` (judged afterwards against the declared frame count).
    """

    def __init__(self, container: Any, stream: Any, short_side: int) -> None:
        self.container, self.stream, self.short_side = container, stream, short_side
        self.count = 0
        self.error: BaseException | None = None
        self.src_size: tuple[int, int] = (0, 0)
        self.size: tuple[int, int] = (0, 0)
        self._scaled: tuple[int, int] = (0, 0)  # size before the rotation
        self._turns = 0  # counter-clockwise quarter turns that make the frame upright
        # One reformatter per step and video: each keeps its swscale context between frames.
        # A fresh one per frame (what VideoFrame.reformat does) rebuilds the filters and a
        # thread pool every time, which made resizing 10x slower than decoding.
        self._scaler = VideoReformatter()
        self._rgb = VideoReformatter()

    def _plan(self, frame: av.VideoFrame) -> None:
        width, height = frame.width, frame.height
        self.src_size = (width, height)
        # Phone videos store a display rotation; FFmpeg's decoder does not apply it.
        self._turns = round((frame.rotation or 0) / 90) % 4
        if self._turns % 2:
            width, height = height, width
        self.size = resized_size(width, height, self.short_side)
        self._scaled = self.size[::-1] if self._turns % 2 else self.size

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = self._scaled
        # threads=1: on frames this small, swscale's threads cost more than they save, and
        # Snakemake already runs one extraction job per core.
        if frame.format.name.startswith("yuv") and (frame.width, frame.height) != (width, height):
            # Scale the YUV planes first, then convert the remaining pixels to RGB: 0.10 vs
            # 0.36 ms per 320x240 -> 171x128 frame with swscale's combined scale-to-RGB path.
            # The price is swscale's fast (less exact) YUV->RGB step: mean error against an
            # exact box-filtered RGB reference 3.2 vs 1.1 levels of 255, 2.8 vs 1.9 after q90
            # JPEG, small next to JPEG's own error and the colour-jitter augmentation. (The
            # usual `ffmpeg -vf scale` frame dumps never leave YUV at all.)
            frame = self._scaler.reformat(
                frame, width=width, height=height, interpolation=_INTERPOLATION, threads=1
            )
        return self._rgb.reformat(
            frame,
            format="rgb24",
            width=width,
            height=height,
            interpolation=_INTERPOLATION,
            threads=1,
        ).to_ndarray()

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, image in self.with_frames():
            yield image

    def with_frames(self) -> Iterator[tuple[av.VideoFrame, np.ndarray]]:
        """(decoded frame, its RGB image) pairs: the frame's timestamps say where it sits."""
        self.stream.thread_type = "AUTO"  # frame + slice threads: decoding is the bottleneck
        try:
            for frame in self.container.decode(self.stream):
                if self.count == 0:
                    self._plan(frame)
                image = self._to_rgb(frame)
                if self._turns:
                    image = np.ascontiguousarray(np.rot90(image, self._turns))
                self.count += 1
                yield frame, image
        except av.error.FFmpegError as err:
            self.error = err


def _problem(count: int, info: _SourceInfo, error: BaseException | None) -> str | None:
    """Why a decode result is unusable (None when it is fine)."""
    if count == 0:
        return "no decodable frames" + (f" ({_reason(error)})" if error else "")
    if info.declared:
        fraction = _MISSING_FRACTION_OK_ESTIMATED if info.estimated else _MISSING_FRACTION_OK
        few = min(_MISSING_FRAMES_OK, _MISSING_FRACTION_OK_SHORT * info.declared)
        if info.declared - count > max(few, fraction * info.declared):
            source = "its duration implies" if info.estimated else "the container declares"
            detail = f"; decode error: {_reason(error)}" if error else ""
            return f"truncated: decoded {count} of the {info.declared} frames {source}{detail}"
        return None
    if error:
        return f"decode error after {count} frames ({_reason(error)})"
    return None


def extract_video(
    src: Path, dst: Path | None, *, short_side: int, codec: str, quality: int
) -> dict[str, Any]:
    """Decode one video into the frame file `dst` and return its manifest entry (no `path`).

    With `dst=None` the video is only decoded and checked (and the entry has no `checksum`).
    Raises BadVideo for a bad file (and then leaves no frame file behind).
    """
    container, stream = _open_video(src)
    checksum = {}
    try:
        info = _source_info(container, stream)
        frames = _DecodedFrames(container, stream, short_side)
        if dst is None:
            for _ in frames:
                pass
        else:
            _, checksum["checksum"] = write_frame_file(dst, frames, codec=codec, quality=quality)
    finally:
        container.close()
    problem = _problem(frames.count, info, frames.error)
    if problem is not None:
        if dst is not None:
            dst.unlink(missing_ok=True)
        raise BadVideo(problem)
    if frames.error is not None:
        print(
            f"vtdl extract: warning: {src}: decode error after {frames.count} of "
            f"{info.declared} frames ({_reason(frames.error)}); kept the decoded frames",
            file=sys.stderr,
        )
    return {
        "frames": frames.count,
        "fps": round(info.fps, 3),
        "src_width": frames.src_size[0],
        "src_height": frames.src_size[1],
        "width": frames.size[0],
        "height": frames.size[1],
        "src_bytes": src.stat().st_size,
        "src_sha256": sha256_file(src),
        **checksum,  # of the frame file, verified when training reads it (framestore)
    }


def _check_settings(short_side: int, codec: str, quality: int, on_error: str) -> None:
    if short_side < 0:
        raise VtdlError(f"--short-side: {short_side} is negative (0 keeps the size)")
    if codec not in CODECS:
        raise VtdlError(f"--codec: unknown codec {codec!r}; expected one of {CODECS}")
    if not 1 <= quality <= 100:
        raise VtdlError(f"--quality: {quality} is outside 1..100")
    if on_error not in ON_ERROR:
        raise VtdlError(f"--on-error: {on_error!r}; expected one of {ON_ERROR}")


@contextlib.contextmanager
def _named_in(tmp: Path, shard_dir: Path) -> Iterator[None]:
    """Errors about files of the shard's temporary folder name them where they belong (a
    failed write, e.g. a full disk, is reported as `<out>/<shard>/<video>.frames`)."""
    try:
        yield
    except VtdlError as err:
        if str(tmp) not in str(err):
            raise
        raise VtdlError(str(err).replace(str(tmp), str(shard_dir))) from None


def extract_shard(
    fmt: str,
    videos_root: str | Path,
    shard: str,
    out_root: str | Path,
    *,
    short_side: int = 0,
    codec: str = "jpeg",
    quality: int = 90,
    on_error: str = "fail",
) -> dict[str, Any]:
    """Extract every video of one shard into `<out_root>/<shard>/` and return its manifest.

    Args:
        fmt: "ucf101", "hmdb51" or "kinetics" (decides what a shard folder is).
        videos_root: the data set's videos folder (official layout).
        shard: `<class>` (ucf101, hmdb51) or `<split>/<class>` (kinetics).
        out_root: frames root; the shard lands in `<out_root>/<shard>/`.
        short_side: resize so the short side has this many pixels (0 keeps the size).
        codec, quality: frame storage, see `vtdl.data.framestore.write_frames`.
        on_error: "fail" raises one VtdlError listing every bad file (output untouched);
            "skip" leaves bad files out and lists them in the manifest's `skipped`.
    """
    _check_format(fmt)
    _check_settings(short_side, codec, quality, on_error)
    shard = _check_shard(fmt, shard)
    shard_dir = Path(videos_root) / shard
    if not shard_dir.is_dir():
        raise VtdlError(f"{shard_dir}: shard folder not found (--shard {shard!r})")
    files = _files_below(shard_dir)
    if not files:
        raise VtdlError(f"{shard_dir}: shard folder holds no video files")
    videos: list[dict[str, Any]] = []
    bad: list[tuple[str, Path, str]] = []
    with atomic_dir(Path(out_root) / shard) as tmp, _named_in(tmp, Path(out_root) / shard):
        for rel in progress(files, desc=f"extract {shard}", total=len(files), unit="video"):
            src = shard_dir / rel
            # Once a failing shard is certain, only check the remaining files (no writing).
            dst = None if bad and on_error == "fail" else tmp / (rel + SUFFIX)
            try:
                target = escapes(src, Path(videos_root))
                if target is not None:
                    raise BadVideo(f"a symlink to {target}, outside the videos root: not read")
                entry = extract_video(src, dst, short_side=short_side, codec=codec, quality=quality)
            except BadVideo as err:
                bad.append((f"{shard}/{rel}", src, err.reason))
                if on_error == "skip":
                    print(f"vtdl extract: skipped {src}: {err.reason}", file=sys.stderr)
                continue
            videos.append({"path": f"{shard}/{rel}", **entry})
        if bad and on_error == "fail":
            lines = "\n".join(f"  {src}: {reason}" for _, src, reason in bad)
            raise VtdlError(
                f"shard {shard!r}: {len(bad)} of {len(files)} files are not usable videos "
                f"(nothing written; --on-error skip leaves them out):\n{lines}"
            )
        manifest = {
            "format": fmt,
            "shard": shard,
            "settings": {"short_side": short_side, "codec": codec, "quality": quality},
            "videos": sorted(videos, key=lambda v: v["path"]),
            "skipped": sorted(
                ({"path": path, "error": reason} for path, _, reason in bad),
                key=lambda v: v["path"],
            ),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def extract_shards(
    fmt: str,
    videos_root: str | Path,
    out_root: str | Path,
    shards: list[str] | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Extract the given shards (all of `list_shards` when None), one after the other.

    A failing shard does not stop the others (their output is kept); afterwards one
    VtdlError reports every failed shard.
    """
    if not shards:
        shards = list_shards(fmt, videos_root)
        if not shards:
            raise VtdlError(f"{videos_root}: no shard folders with files found")
    manifests, failures = [], []
    for shard in shards:
        try:
            manifest = extract_shard(fmt, videos_root, shard, out_root, **settings)
        except VtdlError as err:
            if len(shards) == 1:
                raise
            print(f"vtdl extract: {shard}: failed (reported at the end)", file=sys.stderr)
            failures.append(str(err))
            continue
        manifests.append(manifest)
        print(
            f"vtdl extract: {shard}: {len(manifest['videos'])} videos, "
            f"{sum(v['frames'] for v in manifest['videos'])} frames, "
            f"{len(manifest['skipped'])} skipped",
            file=sys.stderr,
        )
    if failures:
        raise VtdlError(f"{len(failures)} of {len(shards)} shards failed:\n" + "\n".join(failures))
    return manifests


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=FORMATS, help="data set layout")
    parser.add_argument("--videos", required=True, type=Path, help="videos root folder")
    parser.add_argument("--out", required=True, type=Path, help="frames root folder")
    parser.add_argument(
        "--shard",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="shard(s) to extract: <class> (kinetics: <split>/<class>); default: all",
    )
    parser.add_argument(
        "--short-side", type=int, default=0, help="resize the short side to N pixels (0: keep)"
    )
    parser.add_argument("--codec", choices=CODECS, default="jpeg", help="frame storage")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100")
    parser.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default="fail",
        help="bad video files: fail (one error listing all) or skip (list them in the manifest)",
    )


def run(args: argparse.Namespace) -> None:
    extract_shards(
        args.format,
        args.videos,
        args.out,
        args.shard,
        short_side=args.short_side,
        codec=args.codec,
        quality=args.quality,
        on_error=args.on_error,
    )
