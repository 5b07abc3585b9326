"""Extraction benchmark: `vtdl extract` throughput vs a bare PyAV decode of the same videos.

Makes UCF101-like source videos (320x240 mpeg4 .avi, 25 fps; see bench_loader.py) in a
temporary folder and reports frames per second of
  - bare decode: PyAV demux + decode only (frames never leave FFmpeg),
  - decode to RGB: plus conversion of each frame to an RGB numpy array at full size,
  - extract: `extract_shard` (decode, resize, encode, write, checksum, manifest) per codec,
each the best of --repeat runs (the machine may be shared). Prints a table; asserts nothing.

    python bench/bench_extract.py --videos 24 --short-side 128 --codecs jpeg raw
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter
from bench_loader import add_source_arguments, make_source_videos

from vtdl.data.extract import extract_shard


def _decode_all(paths: list[Path], to_rgb: bool) -> None:
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # as in extraction
            # One reformatter per video: frame.to_ndarray would build a swscale context per frame.
            reformatter = VideoReformatter()
            for frame in container.decode(stream):
                if to_rgb:
                    reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def _best_seconds(job: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_source_arguments(parser)
    parser.add_argument("--codecs", nargs="+", default=["jpeg", "raw"])
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--gop", type=int, default=300, help="max frames between key frames")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the best counts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_source_videos(
            root / "videos", args.videos, args.frames, args.width, args.height, args.gop
        )
        total = args.videos * args.frames
        rows: list[tuple[str, float]] = [
            ("bare decode", _best_seconds(lambda: _decode_all(paths, False), args.repeat)),
            ("decode to RGB", _best_seconds(lambda: _decode_all(paths, True), args.repeat)),
        ]
        for codec in args.codecs:
            out = root / f"frames-{codec}"

            def extract(codec: str = codec, out: Path = out) -> None:
                extract_shard(
                    "ucf101",
                    root / "videos",
                    "Bench",
                    out,
                    short_side=args.short_side,
                    codec=codec,
                    quality=args.quality,
                )

            label = f"extract {codec}" + (f" q{args.quality}" if codec == "jpeg" else "")
            rows.append(
                (f"{label}, short side {args.short_side}", _best_seconds(extract, args.repeat))
            )
            size = sum(p.stat().st_size for p in out.rglob("*.frames"))
            print(f"{codec}: {size / total / 1024:.1f} KiB per stored frame")
            shutil.rmtree(out)

        bare = total / rows[0][1]
        print(
            f"\n{args.videos} videos x {args.frames} frames, {args.width}x{args.height} mpeg4; "
            f"best of {args.repeat}"
        )
        print(f"{'':<36} {'frames/s':>9} {'vs bare':>8}")
        for name, seconds in rows:
            fps = total / seconds
            print(f"{name:<36} {fps:>9.0f} {fps / bare:>7.2f}x")


if __name__ == "__main__":
    main()
