"""Frame store: round trips, random access, process safety, and errors that name the file."""

from __future__ import annotations

import json
import pickle
import zlib

import numpy as np
import pytest

from vtdl.data.framestore import (
    FrameFile,
    ManifestChecksums,
    frame_file_path,
    write_frame_file,
    write_frames,
)
from vtdl.errors import VtdlError


def _frames(n: int, h: int = 24, w: int = 33) -> list[np.ndarray]:
    """Smooth colour frames whose content depends on the frame number (JPEG-friendly)."""
    y, x = np.mgrid[0:h, 0:w]
    return [
        np.stack(
            [
                128 + 100 * np.sin(x / 6 + i / 2),
                128 + 90 * np.cos(y / 5 - i / 3),
                np.full(x.shape, (i * 37) % 256),
            ],
            -1,
        ).astype(np.uint8)
        for i in range(n)
    ]


def test_frame_file_path_keeps_the_video_extension(tmp_path):
    assert frame_file_path(tmp_path, "Cls/v_a.avi") == tmp_path / "Cls" / "v_a.avi.frames"
    assert frame_file_path(tmp_path, "a.avi") != frame_file_path(tmp_path, "a.mp4")


def test_raw_round_trip_is_exact(tmp_path):
    frames = _frames(7)
    path = tmp_path / "v.frames"
    assert write_frames(path, iter(frames), codec="raw") == 7
    ff = FrameFile(path)
    assert (ff.num_frames, ff.height, ff.width, ff.codec, len(ff)) == (7, 24, 33, "raw", 7)
    np.testing.assert_array_equal(ff.read(range(7)), np.stack(frames))


def test_jpeg_round_trip_is_close_and_compressed(tmp_path):
    frames = _frames(6, 64, 80)
    path = tmp_path / "v.frames"
    write_frames(path, frames, codec="jpeg", quality=95)
    ff = FrameFile(path)
    assert ff.codec == "jpeg"
    got = ff.read(range(6)).astype(int)
    assert got.shape == (6, 64, 80, 3)
    assert np.abs(got - np.stack(frames)).mean() < 3.0
    assert path.stat().st_size < 6 * 64 * 80 * 3 / 2


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
def test_random_access_any_order_with_repeats(tmp_path, codec):
    frames = _frames(12)
    path = tmp_path / "v.frames"
    write_frames(path, frames, codec=codec)
    ff = FrameFile(path)
    every = ff.read(range(12))
    for indices in ([3], [11, 0, 5], [2, 2, 7, 2], [4, 5, 6, 9, 10], np.array([8, 1])):
        got = ff.read(indices)
        assert got.shape == (len(indices), 24, 33, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, every[np.asarray(indices)])
    assert ff.read([]).shape == (0, 24, 33, 3)


def test_pickled_frame_file_reopens_its_own_handle(tmp_path):
    path = tmp_path / "v.frames"
    write_frames(path, _frames(5), codec="raw")
    ff = FrameFile(path)
    clone = pickle.loads(pickle.dumps(ff))
    assert clone._fd is None  # no handle travels with the pickle
    np.testing.assert_array_equal(clone.read([4, 1]), ff.read([4, 1]))
    ff.close()
    np.testing.assert_array_equal(ff.read([0]), clone.read([0]))  # reopens after close


@pytest.mark.parametrize("bad", [-1, 5, 100])
def test_out_of_range_index_names_the_file(tmp_path, bad):
    path = tmp_path / "v.frames"
    write_frames(path, _frames(5), codec="raw")
    with pytest.raises(VtdlError, match=rf"v\.frames: frame index {bad} out of range.*5 frames"):
        FrameFile(path).read([0, bad])


def test_empty_video_gives_a_valid_empty_file(tmp_path):
    path = tmp_path / "v.frames"
    assert write_frames(path, [], codec="jpeg") == 0
    ff = FrameFile(path)
    assert ff.num_frames == 0
    with pytest.raises(VtdlError, match="out of range"):
        ff.read([0])


def test_missing_and_foreign_files_name_the_file(tmp_path):
    with pytest.raises(VtdlError, match=r"nope\.frames: frame file not found"):
        FrameFile(tmp_path / "nope.frames")
    other = tmp_path / "other.frames"
    other.write_bytes(b"this is not a frame file at all, just some text" * 3)
    with pytest.raises(VtdlError, match=r"other\.frames: not a vtdl frame file"):
        FrameFile(other)


@pytest.mark.parametrize("keep", [10, 200, -8, -1])
def test_truncated_file_is_reported(tmp_path, keep):
    path = tmp_path / "v.frames"
    write_frames(path, _frames(4), codec="jpeg")
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(VtdlError, match=r"v\.frames: corrupt or truncated frame file"):
        FrameFile(path).read([0])


def test_corrupt_jpeg_frame_is_reported(tmp_path):
    path = tmp_path / "v.frames"
    write_frames(path, _frames(3), codec="jpeg")
    ff = FrameFile(path)
    start = int(ff._offsets[1])
    data = bytearray(path.read_bytes())
    data[start : start + 16] = b"\x00" * 16  # destroy frame 1's JPEG header
    path.write_bytes(bytes(data))
    ff = FrameFile(path)
    np.testing.assert_array_equal(ff.read([0]).shape, (1, 24, 33, 3))  # others still fine
    with pytest.raises(VtdlError, match=r"v\.frames: corrupt or truncated.*frames 1\.\.1"):
        ff.read([1])


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "v.frames"

    def broken():
        yield from _frames(2)
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError):
        write_frames(path, broken(), codec="jpeg")
    assert list(tmp_path.iterdir()) == []


def test_mismatched_frames_are_refused(tmp_path):
    with pytest.raises(ValueError, match="frame 1"):
        write_frames(tmp_path / "v.frames", [_frames(1)[0], _frames(1, 10, 10)[0]], codec="raw")
    with pytest.raises(ValueError, match="codec"):
        write_frames(tmp_path / "v.frames", _frames(1), codec="png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
def test_the_checksum_covers_every_byte_and_is_read_back_alike(tmp_path, codec):
    path = tmp_path / "v.frames"
    count, checksum = write_frame_file(path, iter(_frames(5)), codec=codec)
    data = path.read_bytes()
    # Documented order: the body (frames, index), then the 32-byte header.
    assert (count, checksum) == (5, f"crc32:{zlib.crc32(data[32:] + data[:32]):08x}")
    assert FrameFile(path).checksum() == checksum
    offsets = FrameFile(path)._offsets
    for offset in (offsets[0], offsets[2] + 5, offsets[-1] - 1):  # first, middle, last byte
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        assert FrameFile(path).checksum() != checksum


def _shard(root, checksum=None):
    """Frame root with shard `Cls` holding one raw video and its manifest."""
    rel = "Cls/v.avi"
    _, written = write_frame_file(frame_file_path(root, rel), _frames(6), codec="raw")
    entry = {"path": rel, "frames": 6, "checksum": checksum or written}
    (root / "Cls" / "manifest.json").write_text(json.dumps({"videos": [entry]}))
    return rel, frame_file_path(root, rel)


def test_a_frame_file_changed_since_extraction_is_refused_naming_it(tmp_path):
    rel, path = _shard(tmp_path)
    ManifestChecksums(tmp_path).verify(FrameFile(path), rel)  # intact
    data = bytearray(path.read_bytes())
    data[100] ^= 0x04  # one bit of frame 0's pixels: header and index still valid
    path.write_bytes(bytes(data))
    frames = FrameFile(path)
    frames.read([0])  # the frame store alone cannot tell
    with pytest.raises(VtdlError) as err:
        ManifestChecksums(tmp_path).verify(frames, rel)
    message = str(err.value)
    assert str(path) in message and str(tmp_path / "Cls" / "manifest.json") in message
    assert "damaged since extraction" in message and f"delete {tmp_path / 'Cls'}" in message


def test_each_file_is_verified_once_per_process_and_unlisted_files_not_at_all(
    tmp_path, monkeypatch
):
    rel, path = _shard(tmp_path)
    checksums = ManifestChecksums(tmp_path)
    calls = []
    original = FrameFile.checksum

    def counted(self):
        calls.append(self.path)
        return original(self)

    monkeypatch.setattr(FrameFile, "checksum", counted)
    for _ in range(3):
        checksums.verify(FrameFile(path), rel)
    ManifestChecksums(tmp_path).verify(FrameFile(path), rel)  # another dataset, same process
    assert calls == [path]
    # Frames written by hand, with no manifest, or a manifest without checksums: not checked.
    loose = tmp_path / "Other" / "w.avi.frames"
    write_frames(loose, _frames(2), codec="raw")
    checksums.verify(FrameFile(loose), "Other/w.avi")
    (tmp_path / "Other" / "manifest.json").write_text(json.dumps({"videos": [{"path": "x"}]}))
    ManifestChecksums(tmp_path).verify(FrameFile(loose), "Other/w.avi")
    assert calls == [path]


def test_a_replaced_file_is_verified_again(tmp_path):
    rel, path = _shard(tmp_path)
    ManifestChecksums(tmp_path).verify(FrameFile(path), rel)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x04
    replacement = tmp_path / "damaged.tmp"
    replacement.write_bytes(bytes(data))
    replacement.replace(path)  # a new file (inode) where the verified one was
    with pytest.raises(VtdlError, match="damaged since extraction"):
        ManifestChecksums(tmp_path).verify(FrameFile(path), rel)


def test_an_unreadable_manifest_is_one_error_naming_it(tmp_path):
    rel, path = _shard(tmp_path)
    (tmp_path / "Cls" / "manifest.json").write_text("{not json")
    with pytest.raises(VtdlError, match=r"Cls/manifest\.json: not a readable extraction manifest"):
        ManifestChecksums(tmp_path).verify(FrameFile(path), rel)
