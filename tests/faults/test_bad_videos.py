"""Bad and unusual videos in every supported layout, through `vtdl extract`'s shard extraction.

Unusable files (truncated, empty, random bytes, a stream the decoder rejects, audio only) must
give one error naming every bad file in `on_error: fail` mode, leave no partial shard and keep
an earlier finished shard intact; `on_error: skip` must finish and list them. Unusual but good
files (one frame, variable frame rate, rotation metadata, mp4 data under an .avi name, odd
sizes, 4K) must give correct frames, the 4K one with bounded memory (resized while decoding).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vtdl.data.extract import extract_shard, resized_size
from vtdl.data.framestore import FrameFile, frame_file_path
from vtdl.data.video import write_video
from vtdl.errors import VtdlError

SHORT_SIDE = 16
# (format, good shard, bad shard, file name inside a shard)
LAYOUTS = {
    "ucf101": ("ApplyEyeMakeup", "Archery", "v_Archery_g01_c0{}.avi"),
    "hmdb51": ("brush_hair", "cartwheel", "April_09_cartwheel_u_nm_np1_ba_goo_{}.avi"),
    "kinetics": ("train/abseiling", "train/air drumming", "0347ZoDXyP{}_000095_000105.mp4"),
}


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    y, x = np.mgrid[0:h, 0:w]
    return [
        np.stack([128 + 90 * np.sin(x / 5 + i / 3), 128 + 90 * np.cos(y / 4 - i / 4),
                  np.full(x.shape, 60 + 2 * i)], -1).astype(np.uint8)
        for i in range(n)
    ]  # fmt: skip


def _encoded(tmp: Path, name: str, frames, fps=25.0, codec=None) -> bytes:
    path = tmp / name
    write_video(path, frames, fps=fps, codec=codec)
    return path.read_bytes()


def _audio_only(path: Path) -> bytes:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        samples = np.zeros((1, 1024), np.float32)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path.read_bytes()


def _variable_rate(path: Path, n: int) -> bytes:
    """An mp4 whose frame durations vary (40 ms, 80 ms, 20 ms, ...)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=50)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i, image in enumerate(_frames(n, 24, 32)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += (40, 80, 20)[i % 3]
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path.read_bytes()


def _rotated(path: Path) -> bytes:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.set_display_rotation(90)
        for image in _frames(6, 24, 32):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path.read_bytes()


def _rejected_stream(good_mp4: bytes) -> bytes:
    """A valid mp4 container whose coded frames are noise: the decoder rejects every one."""
    start = good_mp4.index(b"mdat") + 4
    noise = np.random.default_rng(1).integers(0, 256, len(good_mp4) - start, np.uint8)
    return good_mp4[:start] + noise.tobytes()


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("samples")
    long = _encoded(tmp, "long.avi", _frames(60, 48, 64))
    mp4 = _encoded(tmp, "good.mp4", _frames(30, 24, 32))
    return {
        "good avi": _encoded(tmp, "good.avi", _frames(30, 24, 32)),
        "good mp4": mp4,
        "truncated": long[: len(long) // 2],
        "zero bytes": b"",
        "random bytes": np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes(),
        "stream the decoder rejects": _rejected_stream(mp4),
        "audio only": _audio_only(tmp / "audio.mp4"),
        "one frame": _encoded(tmp, "one.avi", _frames(1, 24, 32)),
        "variable frame rate": _variable_rate(tmp / "vfr.mp4", 30),
        "rotation metadata": _rotated(tmp / "rot.mp4"),
        "mp4 data under an .avi name": mp4,
        "odd size 321x239": _encoded(tmp, "odd.avi", _frames(8, 239, 321), codec="mpeg4"),
        "symlink out of the videos root": _LINK_OUT,
    }


def _layout(root: Path, fmt: str, samples: dict[str, bytes], extra: dict[str, bytes]) -> Path:
    """The good shard (one video) and the bad shard (one good video plus `extra`)."""
    good_shard, bad_shard, name = LAYOUTS[fmt]
    good = samples["good mp4" if fmt == "kinetics" else "good avi"]
    files = {f"{good_shard}/{name.format(1)}": good, f"{bad_shard}/{name.format(1)}": good}
    for i, (_, data) in enumerate(extra.items(), start=2):
        files[f"{bad_shard}/{name.format(i)}"] = data
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if data is _LINK_OUT:  # a readable video, but outside the videos root
            outside = root.parent / "outside" / Path(rel).name
            outside.parent.mkdir(exist_ok=True)
            outside.write_bytes(good)
            (root / rel).symlink_to(outside)
        else:
            (root / rel).write_bytes(data)
    return root


_LINK_OUT = b"<symlink out of the videos root>"
UNUSABLE = [
    "truncated",
    "zero bytes",
    "random bytes",
    "stream the decoder rejects",
    "audio only",
    "symlink out of the videos root",
]


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
@pytest.mark.parametrize("kind", UNUSABLE)
def test_an_unusable_video_is_named_and_finished_work_is_kept(tmp_path, samples, fault, kind, fmt):
    fault("bad videos", kind)
    good_shard, bad_shard, name = LAYOUTS[fmt]
    videos = _layout(tmp_path / "videos", fmt, samples, {kind: samples[kind]})
    out = tmp_path / "frames"
    extract_shard(fmt, videos, good_shard, out, short_side=SHORT_SIDE)
    finished = fault.snapshot([out / good_shard])
    bad = videos / bad_shard / name.format(2)

    with pytest.raises(VtdlError) as err:
        extract_shard(fmt, videos, bad_shard, out, short_side=SHORT_SIDE)
    message = str(err.value)
    assert f"{bad}: " in message and "1 of 2 files" in message, message
    assert name.format(1) not in message  # the good video is not blamed
    assert not (out / bad_shard).exists()  # no partial shard
    fault.intact(finished)

    manifest = extract_shard(fmt, videos, bad_shard, out, short_side=SHORT_SIDE, on_error="skip")
    assert [s["path"] for s in manifest["skipped"]] == [f"{bad_shard}/{name.format(2)}"]
    assert [v["path"] for v in manifest["videos"]] == [f"{bad_shard}/{name.format(1)}"]
    fault.intact(finished)


# kind: (frames, source width, source height) of the extracted video
USABLE = {
    "one frame": (1, 32, 24),
    "variable frame rate": (30, 32, 24),
    "rotation metadata": (6, 32, 24),  # coded 32x24, displayed (and stored) turned by 90°
    "mp4 data under an .avi name": (30, 32, 24),
    "odd size 321x239": (8, 321, 239),
}


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
@pytest.mark.parametrize("kind", sorted(USABLE))
def test_an_unusual_video_gives_correct_frames(tmp_path, samples, fault, kind, fmt):
    fault("bad videos", kind)
    _, bad_shard, name = LAYOUTS[fmt]
    name = name.replace(".mp4", ".avi") if kind == "mp4 data under an .avi name" else name
    videos = tmp_path / "videos"
    path = videos / bad_shard / name.format(2)
    path.parent.mkdir(parents=True)
    path.write_bytes(samples[kind])
    manifest = extract_shard(fmt, videos, bad_shard, tmp_path / "frames", short_side=SHORT_SIDE)
    (entry,) = manifest["videos"]
    frames, src_w, src_h = USABLE[kind]
    assert (entry["src_width"], entry["src_height"]) == (src_w, src_h)
    shown = (src_h, src_w) if kind == "rotation metadata" else (src_w, src_h)  # as displayed
    assert (entry["width"], entry["height"]) == resized_size(*shown, SHORT_SIDE)
    assert entry["frames"] == frames
    stored = FrameFile(frame_file_path(tmp_path / "frames", entry["path"]))
    assert (stored.num_frames, stored.width, stored.height) == (
        frames, entry["width"], entry["height"]
    )  # fmt: skip
    pixels = stored.read(range(frames))
    assert pixels.dtype == np.uint8 and pixels.std() > 5  # real picture content, not blank


_PEAK_RSS = """
import json, resource, sys
from vtdl.data.extract import extract_shard
extract_shard("ucf101", sys.argv[1], "Cls", sys.argv[2], short_side=16)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024))
"""


def _peak_rss_mb(videos: Path, out: Path) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(videos), str(out)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_4k_video_is_resized_while_decoding_in_bounded_memory(tmp_path, fault):
    fault("bad videos", "4K video (memory bounded)")
    small, large = tmp_path / "small", tmp_path / "large"
    flat = [np.full((2160, 3840, 3), 40 + 8 * i, np.uint8) for i in range(24)]
    write_video(large / "Cls" / "v_4k.avi", flat, codec="mpeg4")
    write_video(small / "Cls" / "v_small.avi", [f[:24, :32] for f in flat], codec="mpeg4")
    baseline = _peak_rss_mb(small, tmp_path / "small_frames")
    peak = _peak_rss_mb(large, tmp_path / "large_frames")
    # 24 decoded 4K RGB frames are 600 MB; resizing each as it is decoded keeps a few.
    assert peak - baseline < 250, (baseline, peak)
    stored = FrameFile(frame_file_path(tmp_path / "large_frames", "Cls/v_4k.avi"))
    assert (stored.num_frames, stored.width, stored.height) == (24, 28, 16)
    shutil.rmtree(large)
