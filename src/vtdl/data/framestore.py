"""Frame store: all decoded frames of one video in one file, with fast random access.

One file per video, never one per frame: a data set of millions of small files chokes file
systems, rsync and DVC, while one file per video keeps the count at the number of videos.

File layout (all integers little-endian):

    header   32 bytes  magic b"VTDLFRMS", version u16, codec u16, num_frames u32,
                       height u32, width u32, index_offset u64
    blobs              frame 0, frame 1, ... (JPEG files, or raw H*W*3 RGB bytes)
    index              (num_frames + 1) u64 absolute offsets: frame i is the bytes
                       [offset[i], offset[i+1]); offset[num_frames] == index_offset

The index sits after the blobs (the header says where) so that `write_frames` streams frames of
any length to disk without holding them in memory. The file size must equal
index_offset + 8 * (num_frames + 1), which catches truncation when the file is opened.

Checksums: extraction records each frame file's checksum in its shard's `manifest.json`
(`"checksum": "crc32:<8 hex digits>"`, see `write_frame_file`), and `ManifestChecksums.verify`
checks a file against it the first time a process opens it, so a file damaged after extraction
(flipped bits, a bad copy) is refused with one error naming it instead of being trained on.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import warnings
import zlib
from collections.abc import Iterable, Sequence
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from vtdl.errors import VtdlError
from vtdl.fsutil import atomic_path

if TYPE_CHECKING:
    import torch

# torch is imported where JPEG frames are decoded, not at import: extraction (which only
# writes) then starts without it (measured: 0.2 instead of 1.4 s of CPU, 55 instead of 660 MB).

MAGIC = b"VTDLFRMS"
VERSION = 1
CODECS = ("raw", "jpeg")  # position in this tuple is the codec id stored in the header
_HEADER = struct.Struct("<8sHHIIIQ")
SUFFIX = ".frames"
MANIFEST = "manifest.json"  # one per extracted shard folder (written by vtdl.data.extract)
# CRC-32, not SHA-256: it detects damage (any burst of up to 32 flipped bits, else all but one
# in 2**32), not tampering, at 2.6x the speed here (1.6 vs 0.6 GB/s), which extraction pays
# on every frame it writes. It covers the file body (blobs and index) followed by the header,
# the order in which `write_frame_file` has the bytes (the header is written last).
CHECKSUM_ALGORITHM = "crc32"
_CHECKSUM_CHUNK = 1 << 20
# Frame files whose checksum this process has verified, by (device, inode, size, mtime): the
# loader opens the same small files many times per epoch and must pay for the check once.
_VERIFIED: set[tuple[int, int, int, int]] = set()
_REDO = "delete its shard folder and re-run `make reproduce` (or vtdl extract) to extract it again"

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec (not a dependency). They
# remain the fastest JPEG decoder here (see FrameFile._decode_jpegs), so that one warning is
# silenced; once they are gone, frames are decoded with Pillow instead.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision are deprecated",
    category=DeprecationWarning,
)


@functools.cache
def _torchvision_jpeg_decoder() -> Any:
    """torchvision's batched JPEG decoder, or None. Imported on first use: torchvision costs
    about 1.5 s of CPU to import, which a job reading raw frames must not pay."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # pragma: no cover - a future torchvision without image codecs
        return None
    return lambda blobs: decode_jpeg(blobs, mode=ImageReadMode.RGB)


def frame_file_path(frames_root: str | os.PathLike, rel_path: str) -> Path:
    """Frame file of the video `rel_path` (relative to the videos root, POSIX separators).

    The video's extension is kept (`a.avi` -> `a.avi.frames`), so `a.avi` and `a.mp4` never
    collide.
    """
    return Path(frames_root) / (rel_path + SUFFIX)


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    # Pillow encodes with libjpeg-turbo, ~1.5-2x faster than torchvision.io.encode_jpeg here
    # (128x170: 0.24 ms vs 0.55 ms per frame) and produces byte-identical files.
    # frombuffer wraps the array without the copy Image.fromarray makes (~10% of the time).
    frame = np.ascontiguousarray(frame)
    image = Image.frombuffer("RGB", (frame.shape[1], frame.shape[0]), frame, "raw", "RGB", 0, 1)
    buf = BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _checksum_text(crc: int) -> str:
    return f"{CHECKSUM_ALGORITHM}:{crc:08x}"


def write_frames(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    codec: str = "jpeg",
    quality: int = 90,
) -> int:
    """Write RGB uint8 frames of shape (H, W, 3) to one frame file, atomically; see
    `write_frame_file` (which also returns the file's checksum)."""
    return write_frame_file(path, frames, codec, quality)[0]


def write_frame_file(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    codec: str = "jpeg",
    quality: int = 90,
) -> tuple[int, str]:
    """Write RGB uint8 frames of shape (H, W, 3) to one frame file, atomically.

    Args:
        path: the frame file to write (usually `frame_file_path(root, rel_path)`).
        frames: the video's frames in order; all must have the same shape.
        codec: "jpeg" (compact; for real data sets) or "raw" (lossless; for tiny frames where
            JPEG artefacts would swamp the signal).
        quality: JPEG quality 1..100 (ignored by "raw").

    Returns:
        The number of frames written (a video without frames gives a valid empty file), and
        the file's checksum ("crc32:<hex>", computed while writing; what `FrameFile.checksum`
        reads back from an intact file).
    """
    if codec not in CODECS:
        raise ValueError(f"unknown frame codec {codec!r}; expected one of {CODECS}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality {quality} is outside 1..100")
    path = Path(path)
    offsets = [_HEADER.size]
    height = width = 0
    crc = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(bytes(_HEADER.size))  # placeholder; the real header needs the final counts
        for frame in frames:
            if len(offsets) == 1:
                if frame.ndim != 3 or frame.shape[2] != 3:
                    raise ValueError(f"{path}: frames must be (H, W, 3), got {frame.shape}")
                height, width = frame.shape[:2]
            if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                raise ValueError(
                    f"{path}: frame {len(offsets) - 1} is {frame.dtype} {frame.shape}, "
                    f"expected uint8 {(height, width, 3)}"
                )
            # A raw frame is written and checksummed from its own memory (no bytes copy).
            blob = (
                _encode_jpeg(frame, quality)
                if codec == "jpeg"
                else memoryview(np.ascontiguousarray(frame)).cast("B")
            )
            f.write(blob)
            crc = zlib.crc32(blob, crc)
            offsets.append(offsets[-1] + len(blob))
        index_offset = offsets[-1]
        index = np.asarray(offsets, dtype="<u8").tobytes()
        f.write(index)
        header = _HEADER.pack(
            MAGIC, VERSION, CODECS.index(codec), len(offsets) - 1, height, width, index_offset
        )
        f.seek(0)
        f.write(header)
        crc = zlib.crc32(header, zlib.crc32(index, crc))
    return len(offsets) - 1, _checksum_text(crc)


def _decode_with_pillow(blob: torch.Tensor) -> torch.Tensor:
    import torch

    image = np.asarray(Image.open(BytesIO(blob.numpy().tobytes())).convert("RGB"))
    return torch.from_numpy(image.copy()).permute(2, 0, 1)


def _pread_into(fd: int, size: int, offset: int) -> bytearray:
    """Read `size` bytes at `offset` without moving a shared file position (thread/fork safe)."""
    buf = bytearray(size)
    if hasattr(os, "preadv"):
        got = os.preadv(fd, [buf], offset)  # straight into a writable buffer: no extra copy
    else:  # pragma: no cover - platforms without preadv
        data = os.pread(fd, size, offset)
        got = len(data)
        buf[:got] = data
    if got != size:
        del buf[got:]
    return buf


class FrameFile:
    """Random access to the frames of one frame file.

    The header and index are read (and checked) when the object is made; the OS file is opened
    lazily once per process, so a FrameFile made in the main process can be pickled into (or
    inherited by) DataLoader workers, each of which then opens its own handle.

    Attributes:
        path: the frame file.
        num_frames, height, width: the stored video's size.
        codec: "jpeg" or "raw".
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._fd_pid = -1
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise VtdlError(f"{self.path}: frame file not found") from None
        except OSError as err:
            raise VtdlError(f"{self.path}: cannot open frame file: {err.strerror}") from None
        try:
            self._read_header(fd)
        except BaseException:
            os.close(fd)
            raise
        # Keep the handle that read the header: the common use is "open, read one clip, close".
        self._fd, self._fd_pid = fd, os.getpid()

    def _corrupt(self, what: str) -> VtdlError:
        return VtdlError(f"{self.path}: corrupt or truncated frame file: {what}; {_REDO}")

    def _read_header(self, fd: int) -> None:
        stat = os.fstat(fd)
        size = stat.st_size
        self.identity = (stat.st_dev, stat.st_ino, size, stat.st_mtime_ns)
        head = os.pread(fd, _HEADER.size, 0)
        if len(head) < _HEADER.size:
            raise self._corrupt(f"{size} bytes, shorter than the {_HEADER.size}-byte header")
        if not head.startswith(MAGIC):
            raise VtdlError(f"{self.path}: not a vtdl frame file (bad magic bytes)")
        _, version, codec_id, n, height, width, index_offset = _HEADER.unpack(head)
        if version != VERSION:
            raise VtdlError(
                f"{self.path}: frame file version {version}, this vtdl reads version {VERSION} "
                "(re-run vtdl extract)"
            )
        if codec_id >= len(CODECS):
            raise self._corrupt(f"unknown codec id {codec_id}")
        expected_size = index_offset + 8 * (n + 1)
        if size != expected_size:
            raise self._corrupt(f"size {size} bytes, header says {expected_size}")
        raw_index = os.pread(fd, 8 * (n + 1), index_offset)
        offsets = np.frombuffer(raw_index, dtype="<u8").astype(np.int64)
        sizes = np.diff(offsets)
        if offsets[0] != _HEADER.size or offsets[-1] != index_offset or (sizes < 0).any():
            raise self._corrupt("inconsistent frame index")
        self.codec = CODECS[codec_id]
        if self.codec == "raw" and (sizes != height * width * 3).any():
            raise self._corrupt("raw frame sizes do not match the frame shape")
        self.num_frames, self.height, self.width = n, height, width
        self._offsets = offsets

    # ---------------------------------------------------------------- process-local handle

    def _handle(self) -> int:
        if self._fd is None or self._fd_pid != os.getpid():
            # A forked worker must not close or share the parent's handle: open its own.
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as err:
                raise VtdlError(f"{self.path}: cannot open frame file: {err.strerror}") from None
            self._fd_pid = os.getpid()
        return self._fd

    def close(self) -> None:
        """Close this process's handle (reading again reopens it)."""
        if self._fd is not None and self._fd_pid == os.getpid():
            os.close(self._fd)
        self._fd, self._fd_pid = None, -1

    def __enter__(self) -> FrameFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # getattr: __init__ may have failed before the handle existed.
        if getattr(self, "_fd", None) is not None:
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"], state["_fd_pid"] = None, -1  # a handle means nothing in another process
        return state

    def __len__(self) -> int:
        return self.num_frames

    def checksum(self) -> str:
        """The file's checksum as `write_frame_file` computed it ("crc32:<hex>"), read back."""
        fd = self._handle()
        size = self.identity[2]
        crc, offset = 0, _HEADER.size
        while offset < size:
            block = os.pread(fd, min(_CHECKSUM_CHUNK, size - offset), offset)
            if not block:
                raise self._corrupt(f"ends at byte {offset} while its size was {size}")
            crc = zlib.crc32(block, crc)
            offset += len(block)
        return _checksum_text(zlib.crc32(os.pread(fd, _HEADER.size, 0), crc))

    def __repr__(self) -> str:
        return (
            f"FrameFile({str(self.path)!r}, frames={self.num_frames}, "
            f"size={self.width}x{self.height}, codec={self.codec})"
        )

    # ---------------------------------------------------------------- reading

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at `indices` (0-based; any order, repeats allowed) as uint8 (N, H, W, 3).

        Each distinct frame is read and decoded once; consecutive frames are read with one
        system call.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.empty((0, self.height, self.width, 3), dtype=np.uint8)
        bad = idx[(idx < 0) | (idx >= self.num_frames)]
        if bad.size:
            raise VtdlError(
                f"{self.path}: frame index {int(bad[0])} out of range "
                f"(the file has {self.num_frames} frames)"
            )
        unique, inverse = np.unique(idx, return_inverse=True)
        frames = self._read_unique(unique)
        if unique.size == idx.size and (unique == idx).all():
            return frames
        return frames[inverse]

    def _read_runs(self, unique: np.ndarray) -> list[tuple[np.ndarray, bytearray]]:
        """(run of consecutive frame indices, their bytes) for sorted unique indices."""
        fd = self._handle()
        runs = np.split(unique, np.flatnonzero(np.diff(unique) != 1) + 1)
        out = []
        for run in runs:
            start, end = int(self._offsets[run[0]]), int(self._offsets[run[-1] + 1])
            buf = _pread_into(fd, end - start, start)
            if len(buf) != end - start:
                raise self._corrupt(f"frames {run[0]}..{run[-1]} end past the end of the file")
            out.append((run, buf))
        return out

    def _read_unique(self, unique: np.ndarray) -> np.ndarray:
        runs = self._read_runs(unique)
        if self.codec == "raw":
            out = np.empty((unique.size, self.height, self.width, 3), dtype=np.uint8)
            pos = 0
            for run, buf in runs:
                out[pos : pos + run.size] = np.frombuffer(buf, dtype=np.uint8).reshape(
                    run.size, self.height, self.width, 3
                )
                pos += run.size
            return out
        return self._decode_jpegs(runs)

    def _decode_jpegs(self, runs: list[tuple[np.ndarray, bytearray]]) -> np.ndarray:
        # torchvision.io.decode_jpeg over a list beats Pillow on this machine (both libjpeg-
        # turbo): per frame 0.08 vs 0.21 ms at 40x53, 0.28 vs 0.40 ms at 128x170, and the
        # 16-frame list call is 2-2.7x faster than a Pillow loop (0.75 vs 2.7 ms, 3.7 vs
        # 9.9 ms), since it skips Pillow's per-image Python overhead. torch.frombuffer views
        # the read buffer without copying.
        import torch

        blobs = []
        indices = []
        for run, buf in runs:
            base = int(self._offsets[run[0]])
            for i in run:
                start, end = int(self._offsets[i]) - base, int(self._offsets[i + 1]) - base
                if end == start:
                    raise self._corrupt(f"frame {i} is empty")
                blob = torch.frombuffer(buf, dtype=torch.uint8, offset=start, count=end - start)
                blobs.append(blob)
                indices.append(int(i))
        try:
            decode_jpeg = _torchvision_jpeg_decoder()
            if decode_jpeg is not None:
                decoded = decode_jpeg(blobs)
            else:  # pragma: no cover
                decoded = [_decode_with_pillow(blob) for blob in blobs]
        except (RuntimeError, OSError) as err:
            raise self._corrupt(
                f"bad JPEG data among frames {indices[0]}..{indices[-1]}: "
                f"{str(err).splitlines()[0]}"
            ) from None
        for i, image in zip(indices, decoded, strict=True):
            if image.shape != (3, self.height, self.width):
                raise self._corrupt(
                    f"frame {i} decodes to {tuple(image.shape)}, expected "
                    f"{(3, self.height, self.width)}"
                )
        # Stacking the (H, W, 3) views makes the channels-last result in a single copy.
        return torch.stack([image.permute(1, 2, 0) for image in decoded]).numpy()


class ManifestChecksums:
    """The frame-file checksums recorded in the shard manifests under a frames root.

    A manifest sits in its shard folder (`<class>/` or `<split>/<class>/`) and names each video
    by its path relative to the frames root; each manifest is read once, when a video of its
    shard is first verified. Frame files no manifest lists (written by hand, as the tests do)
    and manifests from before checksums were recorded are not verified.
    """

    def __init__(self, frames_root: str | os.PathLike) -> None:
        self.root = Path(frames_root)
        self._tables: dict[str, tuple[Path, dict[str, str]] | None] = {}

    def _table(self, folder: str) -> tuple[Path, dict[str, str]] | None:
        if folder not in self._tables:
            path = self.root / folder / MANIFEST
            table = None
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as err:
                raise VtdlError(
                    f"{path}: not a readable extraction manifest ({err}); {_REDO}"
                ) from None
            else:
                videos = data.get("videos") if isinstance(data, dict) else None
                table = (
                    path,
                    {
                        v["path"]: v["checksum"]
                        for v in videos or []
                        if isinstance(v, dict) and isinstance(v.get("checksum"), str)
                    },
                )
            self._tables[folder] = table
        return self._tables[folder]

    def recorded(self, rel_path: str) -> tuple[Path, str] | None:
        """(manifest, checksum) recorded for the video `rel_path`, or None if none is."""
        parts = rel_path.split("/")
        for depth in range(1, len(parts)):
            table = self._table("/".join(parts[:depth]))
            if table is not None:
                checksum = table[1].get(rel_path)
                return None if checksum is None else (table[0], checksum)
        return None

    def verify(self, frames: FrameFile, rel_path: str) -> None:
        """Check `frames` (the frame file of video `rel_path`) against its recorded checksum,
        once per file and process.

        Raises:
            VtdlError: the file differs from what extraction wrote (names the file and what
                to do).
        """
        if frames.identity in _VERIFIED:
            return
        found = self.recorded(rel_path)
        if found is None:
            return
        manifest, expected = found
        actual = frames.checksum()
        if actual != expected:
            raise VtdlError(
                f"{frames.path}: frame file damaged since extraction (checksum {actual}, "
                f"{manifest} recorded {expected}), not used: delete {manifest.parent} and re-run "
                "`make reproduce` (or vtdl extract) to extract the shard again"
            )
        _VERIFIED.add(frames.identity)
