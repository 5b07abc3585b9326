"""`vtdl extract`: real tiny videos in several containers, manifests, and bad-file handling."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from vtdl.cli import main as vtdl_main
from vtdl.data.extract import extract_shard, list_shards, resized_size
from vtdl.data.framestore import FrameFile, frame_file_path
from vtdl.data.video import iter_frames, write_video
from vtdl.errors import VtdlError
from vtdl.fsutil import sha256_file


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    """Smooth moving colour pattern (codec-friendly, so decoded frames stay close)."""
    y, x = np.mgrid[0:h, 0:w]
    return [
        np.stack(
            [
                128 + 90 * np.sin(x / 5 + i / 3),
                128 + 90 * np.cos(y / 4 - i / 4),
                np.full(x.shape, 60 + 2 * i),
            ],
            -1,
        ).astype(np.uint8)
        for i in range(n)
    ]


def _tree(root, files):
    """files: {relative path: bytes or (frames, fps, codec)}"""
    for rel, spec in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, bytes):
            path.write_bytes(spec)
        else:
            frames, fps, codec = spec
            write_video(path, frames, fps=fps, codec=codec)
    return root


@pytest.fixture(scope="module")
def good_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "good.avi"
    write_video(path, _frames(30, 24, 32), fps=25.0)
    return path.read_bytes()


def test_resized_size_keeps_aspect():
    assert resized_size(320, 240, 128) == (171, 128)
    assert resized_size(240, 320, 128) == (128, 171)
    assert resized_size(33, 27, 16) == (20, 16)
    assert resized_size(33, 27, 0) == (33, 27)


def test_list_shards_per_format(tmp_path, good_video):
    ucf = _tree(
        tmp_path / "ucf",
        {
            "B/v.avi": good_video,
            "A/v.avi": good_video,
            "Empty/.DS_Store": b"x",
            ".hidden/v.avi": good_video,
            "loose.txt": b"x",
        },
    )
    (ucf / "Nothing").mkdir()
    assert list_shards("ucf101", ucf) == ["A", "B"]
    k400 = _tree(
        tmp_path / "k400",
        {
            "train/abseiling/a.mp4": good_video,
            "train/zumba/b.mp4": good_video,
            "val/abseiling/c.mp4": good_video,
            "annotations/train.csv": b"label,youtube_id\n",
        },
    )
    assert list_shards("kinetics", k400) == ["train/abseiling", "train/zumba", "val/abseiling"]
    with pytest.raises(VtdlError, match="videos directory not found"):
        list_shards("hmdb51", tmp_path / "none")
    with pytest.raises(VtdlError, match="--format"):
        list_shards("ucf", ucf)


def test_extracts_containers_rates_and_odd_sizes(tmp_path):
    videos = tmp_path / "videos"
    avi, mp4, webm = _frames(20, 27, 33), _frames(18, 30, 40), _frames(12, 25, 31)
    _tree(
        videos,
        {
            "Cls/v_a.avi": (avi, 25.0, "mpeg4"),  # odd width and height
            "Cls/v_b.mp4": (mp4, 30000 / 1001, "libx264"),  # x264 needs even sizes
            "Cls/v_c.webm": (webm, 25.0, "libvpx-vp9"),
            "Cls/UPPER.AVI": (avi[:10], 30000 / 1001, "mpeg4"),
            "Cls/.DS_Store": b"\x00\x01",  # hidden: not a video, ignored
        },
    )
    manifest = extract_shard(
        "ucf101", videos, "Cls", tmp_path / "frames", short_side=16, codec="raw", quality=90
    )
    assert manifest["format"] == "ucf101" and manifest["shard"] == "Cls"
    assert manifest["settings"] == {"short_side": 16, "codec": "raw", "quality": 90}
    assert manifest["skipped"] == []
    by_path = {v["path"]: v for v in manifest["videos"]}
    assert [v["path"] for v in manifest["videos"]] == sorted(by_path)
    expected = {  # path: (frames, fps, src w, src h)
        "Cls/UPPER.AVI": (10, 29.97, 33, 27),
        "Cls/v_a.avi": (20, 25.0, 33, 27),
        "Cls/v_b.mp4": (18, 29.97, 40, 30),
        "Cls/v_c.webm": (12, 25.0, 31, 25),
    }
    assert set(by_path) == set(expected)
    for path, (frames, fps, src_w, src_h) in expected.items():
        entry = by_path[path]
        width, height = resized_size(src_w, src_h, 16)
        src = videos / path
        stored = FrameFile(frame_file_path(tmp_path / "frames", path))
        assert entry == {
            "path": path,
            "frames": frames,
            "fps": fps,
            "src_width": src_w,
            "src_height": src_h,
            "width": width,
            "height": height,
            "src_bytes": src.stat().st_size,
            "src_sha256": sha256_file(src),
            "checksum": stored.checksum(),
        }
        assert (stored.num_frames, stored.width, stored.height) == (frames, width, height)
    on_disk = json.loads((tmp_path / "frames" / "Cls" / "manifest.json").read_text())
    assert on_disk == manifest


def test_stored_frames_match_the_decoded_video(tmp_path):
    videos = _tree(tmp_path / "videos", {"Cls/v.avi": (_frames(15, 24, 32), 25.0, "mpeg4")})
    extract_shard("hmdb51", videos, "Cls", tmp_path / "full", short_side=0, codec="raw")
    decoded = np.stack(list(iter_frames(videos / "Cls" / "v.avi")))
    stored = FrameFile(tmp_path / "full" / "Cls" / "v.avi.frames").read(range(15))
    assert np.abs(stored.astype(int) - decoded).mean() < 1.0
    extract_shard(
        "hmdb51", videos, "Cls", tmp_path / "small", short_side=12, codec="jpeg", quality=95
    )
    small = FrameFile(tmp_path / "small" / "Cls" / "v.avi.frames").read(range(15))
    assert small.shape == (15, 12, 16, 3)
    # Averaging 2x2 blocks of the full frames approximates the area-resized frames.
    pooled = decoded.reshape(15, 12, 2, 16, 2, 3).mean(axis=(2, 4))
    assert np.abs(small.astype(float) - pooled).mean() < 8.0


def test_display_rotation_is_applied(tmp_path):
    frame = np.zeros((24, 32, 3), np.uint8)
    frame[:8, :8] = (250, 20, 20)  # red block top-left
    path = tmp_path / "videos" / "Cls" / "phone.mp4"
    path.parent.mkdir(parents=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.set_display_rotation(90)  # counter-clockwise, as VideoFrame.rotation reports
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    manifest = extract_shard("ucf101", tmp_path / "videos", "Cls", tmp_path / "frames", codec="raw")
    entry = manifest["videos"][0]
    assert (entry["src_width"], entry["src_height"]) == (32, 24)
    assert (entry["width"], entry["height"]) == (24, 32)
    stored = FrameFile(tmp_path / "frames" / "Cls" / "phone.mp4.frames").read([0])[0]
    assert np.abs(stored.astype(int) - np.rot90(frame)).mean() < 6.0


def test_a_few_missing_frames_are_tolerated(tmp_path, good_video):
    # Cut the AVI index and the tail of the last frame: the header still declares 30 frames.
    videos = _tree(tmp_path / "videos", {"Cls/cut.avi": good_video[: -(16 * 30 + 8 + 40)]})
    manifest = extract_shard("ucf101", videos, "Cls", tmp_path / "frames")
    assert manifest["skipped"] == [] and manifest["videos"][0]["frames"] >= 28


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "long.avi"
    write_video(path, _frames(60, 48, 64), fps=25.0)
    return path.read_bytes()


@pytest.fixture
def bad_tree(good_video, long_video):
    def make(root):
        return _tree(
            root,
            {
                "Cls/good.avi": good_video,
                "Cls/corrupt.avi": bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)),
                "Cls/half.avi": long_video[: len(long_video) // 2],
                "Cls/empty.avi": b"",
                "Cls/readme.txt": b"These are my videos.\nEnjoy!\n" * 10,
            },
        )

    return make


BAD = {
    "Cls/corrupt.avi": "not a readable video",
    "Cls/empty.avi": "empty file",
    "Cls/half.avi": "truncated: decoded",
    "Cls/readme.txt": "not a",  # FFmpeg either refuses it or reads it as text "video"
}


def test_fail_mode_lists_every_bad_file_and_keeps_previous_output(tmp_path, good_video, bad_tree):
    videos = _tree(tmp_path / "videos", {"Cls/good.avi": good_video})
    out = tmp_path / "frames"
    before = extract_shard("ucf101", videos, "Cls", out)
    manifest_before = (out / "Cls" / "manifest.json").read_bytes()
    bad_tree(videos)
    with pytest.raises(VtdlError) as err:
        extract_shard("ucf101", videos, "Cls", out, short_side=8)
    message = str(err.value)
    assert "shard 'Cls': 4 of 5 files are not usable videos" in message
    for rel, reason in BAD.items():
        assert f"{videos / rel}: {reason}" in message
    assert "good.avi" not in message
    # The previous shard is untouched and no temporary folder is left behind.
    assert (out / "Cls" / "manifest.json").read_bytes() == manifest_before
    assert sorted(p.name for p in out.iterdir()) == ["Cls"]
    assert sorted(p.name for p in (out / "Cls").iterdir()) == ["good.avi.frames", "manifest.json"]
    assert before["videos"][0]["width"] == 32


def test_fail_mode_leaves_no_partial_shard(tmp_path, bad_tree):
    videos = bad_tree(tmp_path / "videos")
    with pytest.raises(VtdlError, match="4 of 5 files"):
        extract_shard("ucf101", videos, "Cls", tmp_path / "frames")
    assert list((tmp_path / "frames").iterdir()) == []


def test_skip_mode_lists_bad_files(tmp_path, bad_tree, capsys):
    videos = bad_tree(tmp_path / "videos")
    manifest = extract_shard("ucf101", videos, "Cls", tmp_path / "frames", on_error="skip")
    assert [v["path"] for v in manifest["videos"]] == ["Cls/good.avi"]
    assert [s["path"] for s in manifest["skipped"]] == sorted(BAD)
    for skipped in manifest["skipped"]:
        assert skipped["error"].startswith(BAD[skipped["path"]])
    shard = tmp_path / "frames" / "Cls"
    assert sorted(p.name for p in shard.iterdir()) == ["good.avi.frames", "manifest.json"]
    log = capsys.readouterr().err
    assert all(f"skipped {videos / rel}" in log for rel in BAD)


def test_kinetics_shards_and_bad_arguments(tmp_path, good_video):
    videos = _tree(tmp_path / "k400", {"train/abseiling/x_000001_000011.mp4": good_video})
    manifest = extract_shard("kinetics", videos, "train/abseiling", tmp_path / "frames")
    assert manifest["videos"][0]["path"] == "train/abseiling/x_000001_000011.mp4"
    assert (tmp_path / "frames" / "train" / "abseiling" / "manifest.json").is_file()
    with pytest.raises(VtdlError, match=r"--shard 'abseiling': a kinetics shard is"):
        extract_shard("kinetics", videos, "abseiling", tmp_path / "frames")
    with pytest.raises(VtdlError, match="shard folder not found"):
        extract_shard("kinetics", videos, "val/abseiling", tmp_path / "frames")
    with pytest.raises(VtdlError, match="--quality"):
        extract_shard("kinetics", videos, "train/abseiling", tmp_path / "f", quality=0)
    with pytest.raises(VtdlError, match="--short-side"):
        extract_shard("kinetics", videos, "train/abseiling", tmp_path / "f", short_side=-1)


def test_cli_extracts_all_shards_and_reports_failures(tmp_path, good_video, capsys):
    videos = _tree(tmp_path / "videos", {"A/a.avi": good_video, "B/b.avi": good_video})
    out = tmp_path / "frames"
    args = ["extract", "--format", "ucf101", "--videos", str(videos), "--out", str(out)]
    args += "--short-side 8 --codec jpeg --quality 80".split()
    assert vtdl_main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["A", "B"]
    (videos / "B" / "bad.avi").write_bytes(b"")
    assert vtdl_main(args) == 2
    err = capsys.readouterr().err
    assert "1 of 2 shards failed" in err and f"{videos / 'B' / 'bad.avi'}: empty file" in err
    assert vtdl_main([*args, "--shard", "A", "--on-error", "skip"]) == 0


# --------------------------------------------------------------------------------------------
# Real-world containers, codecs, rates and sizes through the `vtdl extract` command.

REAL_WORLD = [  # file, encoder, fps, width, height
    ("h264.mp4", "libx264", 30000 / 1001, 64, 48),
    ("vp9.webm", "libvpx-vp9", 30000 / 1001, 64, 48),
    ("vp8.webm", "libvpx", 25.0, 64, 48),
    ("odd.avi", "mpeg4", 30000 / 1001, 321, 239),
]


def _extract_args(videos, out, *extra):
    return ["extract", "--format", "ucf101", "--videos", str(videos), "--out", str(out), *extra]


@pytest.mark.parametrize(("name", "encoder", "fps", "width", "height"), REAL_WORLD)
def test_cli_extracts_real_world_formats(tmp_path, name, encoder, fps, width, height):
    if encoder not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {encoder} encoder")
    frames = _frames(14, height, width)
    videos = _tree(tmp_path / "videos", {f"Cls/{name}": (frames, fps, encoder)})
    out = tmp_path / "frames"
    assert vtdl_main(_extract_args(videos, out, "--short-side", "16", "--codec", "raw")) == 0
    manifest = json.loads((out / "Cls" / "manifest.json").read_text())
    (entry,) = manifest["videos"]
    assert entry["path"] == f"Cls/{name}"
    assert (entry["frames"], entry["fps"]) == (14, round(fps, 3))
    assert (entry["src_width"], entry["src_height"]) == (width, height)
    assert (entry["width"], entry["height"]) == resized_size(width, height, 16)
    stored = FrameFile(frame_file_path(out, entry["path"])).read(range(14))
    assert stored.shape == (14, entry["height"], entry["width"], 3)
    # Same frames in the same order and colours (RGB, not BGR): per-frame channel means agree.
    decoded = np.stack(list(iter_frames(videos / "Cls" / name)))
    means_stored = stored.reshape(14, -1, 3).mean(1)
    means_decoded = decoded.reshape(14, -1, 3).mean(1)
    assert np.abs(means_stored - means_decoded).max() < 4.0


def test_a_short_video_missing_most_of_its_frames_is_truncated(tmp_path):
    path = tmp_path / "full.avi"
    write_video(path, _frames(12, 48, 64), fps=25.0)
    # The first 80% of the file: AVI header and about half of the frames, no index.
    videos = _tree(tmp_path / "videos", {"Cls/half.avi": _cut(path, 0.8)})
    with pytest.raises(VtdlError, match=r"half.avi: truncated: decoded [3-8] of the 12 frames"):
        extract_shard("ucf101", videos, "Cls", tmp_path / "frames")


def _cut(path, fraction=0.5):
    data = path.read_bytes()
    return data[: int(len(data) * fraction)]


def test_cli_names_every_bad_file_once_keeps_finished_shards_and_skip_lists_them(
    tmp_path, good_video, capsys
):
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "long.mp4", _frames(60, 48, 64), fps=30000 / 1001, codec="libx264")
    write_video(src / "long.webm", _frames(60, 48, 64), fps=25.0, codec="libvpx")
    videos = _tree(
        tmp_path / "videos",
        {"A/good.avi": good_video, "B/good.avi": good_video, "C/good.avi": good_video},
    )
    out = tmp_path / "frames"
    assert vtdl_main(_extract_args(videos, out)) == 0
    before = {shard: (out / shard / "manifest.json").read_bytes() for shard in "ABC"}

    bad = {
        "B/cut.mp4": "",  # the mp4 index (moov) is at the end: gone
        "B/cut.webm": "truncated: decoded",
        "B/corrupt.avi": "not a readable video",
        "B/empty.avi": "empty file",
        "B/notes.txt": "not a",
    }
    (videos / "B" / "cut.mp4").write_bytes(_cut(src / "long.mp4"))
    (videos / "B" / "cut.webm").write_bytes(_cut(src / "long.webm"))
    (videos / "B" / "corrupt.avi").write_bytes(bytes(range(256)) * 8)
    (videos / "B" / "empty.avi").write_bytes(b"")
    (videos / "B" / "notes.txt").write_text("not a video\n" * 20)
    (videos / "C" / "new.avi").write_bytes(good_video)
    capsys.readouterr()

    assert vtdl_main(_extract_args(videos, out)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("vtdl extract: error:")]
    assert len(errors) == 1  # one error ...
    assert "1 of 3 shards failed" in errors[0]
    assert "shard 'B': 5 of 6 files are not usable videos" in err
    for rel, reason in bad.items():  # ... naming every bad file
        assert f"{videos / rel}: {reason}" in err
    assert "good.avi" not in err
    # Shards A and C finished (C with its new video); B keeps its previous output.
    assert (out / "A" / "manifest.json").read_bytes() == before["A"]
    assert [v["path"] for v in json.loads((out / "C" / "manifest.json").read_text())["videos"]] == [
        "C/good.avi",
        "C/new.avi",
    ]
    assert (out / "B" / "manifest.json").read_bytes() == before["B"]
    assert sorted(p.name for p in (out / "B").iterdir()) == ["good.avi.frames", "manifest.json"]
    assert sorted(p.name for p in out.iterdir()) == ["A", "B", "C"]  # no temporary folders

    assert vtdl_main(_extract_args(videos, out, "--shard", "B", "--on-error", "skip")) == 0
    log = capsys.readouterr().err
    manifest = json.loads((out / "B" / "manifest.json").read_text())
    assert [v["path"] for v in manifest["videos"]] == ["B/good.avi"]
    assert [s["path"] for s in manifest["skipped"]] == sorted(bad)
    for rel in bad:
        assert f"skipped {videos / rel}: " in log
    assert "B: 1 videos, 30 frames, 5 skipped" in log
