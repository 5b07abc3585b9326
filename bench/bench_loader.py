"""Loader benchmark: clips from extracted frame files vs clips decoded from the source videos.

Makes UCF101-like source videos (320x240 mpeg4 .avi, 25 fps) in a temporary folder, extracts
them with `vtdl extract`'s function (short side 128, JPEG), then measures augmented clips per
second delivered by a DataLoader over
  (a) ClipDataset reading the frame files, and
  (b) a Dataset that seeks in the source video with PyAV and decodes the clip,
both followed by the same augmentation (random resized crop to 112, ImageNet normalisation).
Prints a table; asserts nothing.

    python bench/bench_loader.py --videos 24 --workers 0 2 --strides 1 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter
from torch.utils.data import DataLoader, Dataset

from vtdl.data.clips import ClipDataset, clip_indices, clip_span
from vtdl.data.extract import extract_shard, resized_size

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
SCALE, SHIFT = 1 / (255 * STD), MEAN / STD  # (x / 255 - mean) / std as one multiply-subtract


def _write_avi(path: Path, frames: Iterator[np.ndarray], gop: int) -> None:
    """mpeg4 .avi at 25 fps with at most `gop` frames between key frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("mpeg4", rate=25)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.gop_size = gop
                stream.codec_context.qmin = stream.codec_context.qmax = 4
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def make_source_videos(
    root: Path,
    num_videos: int,
    frames: int,
    width: int,
    height: int,
    gop: int = 300,
    seed: int = 0,
) -> list[Path]:
    """UCF101-like videos under root/Bench/: a textured background panning, a moving block.

    gop 300 is xvid's default maximum key-frame interval (x264's is 250): UCF101 and HMDB51
    are xvid/divx .avi files and Kinetics clips x264 .mp4, so a few-second clip usually has
    a single key frame and a seek has to decode from the start.
    """
    rng = np.random.default_rng(seed)
    paths = []
    for v in range(num_videos):
        # Low-frequency texture (upsampled noise) so the codec has realistic work to do.
        coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
        texture = np.repeat(np.repeat(coarse, 8, 0), 8, 1)
        dx, dy = rng.integers(-3, 4, 2)

        def video(texture: np.ndarray = texture, dx: int = dx, dy: int = dy) -> np.ndarray:
            for t in range(frames):
                frame = np.roll(texture, (t * dy, t * dx), axis=(0, 1))[:height, :width].copy()
                x = (t * 4) % (width - 40)
                frame[height // 3 : height // 3 + 40, x : x + 40] = (255, 40, 40)
                yield frame

        path = root / "Bench" / f"v_Bench_g{v // 4 + 1:02d}_c{v % 4 + 1:02d}.avi"
        _write_avi(path, video(), gop)
        paths.append(path)
    return paths


def augment(clip: torch.Tensor, crop: int) -> torch.Tensor:
    """uint8 (T, H, W, C) -> normalised float (C, T, crop, crop); one random box per clip."""
    _, height, width, _ = clip.shape
    area = height * width * float(torch.empty(()).uniform_(0.4, 1.0))
    aspect = float(torch.empty(()).uniform_(3 / 4, 4 / 3))
    h = min(height, max(1, round((area / aspect) ** 0.5)))
    w = min(width, max(1, round((area * aspect) ** 0.5)))
    y0 = int(torch.randint(height - h + 1, ()))
    x0 = int(torch.randint(width - w + 1, ()))
    # Resize while still uint8 and channels-last (torch's fast path), then one float pass.
    x = clip[:, y0 : y0 + h, x0 : x0 + w].permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(crop, crop), mode="bilinear", align_corners=False, antialias=True)
    return x.permute(1, 0, 2, 3).float().mul_(SCALE).sub_(SHIFT)


class SourceClipDataset(Dataset):
    """Baseline: seek + decode each clip from the source video with PyAV."""

    def __init__(
        self,
        videos: list[tuple[Path, int]],
        clip_len: int,
        stride: int,
        short_side: int,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.videos, self.clip_len, self.stride = videos, clip_len, stride
        self.short_side, self.transform = short_side, transform

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        path, num_frames = self.videos[index]
        last_start = max(num_frames - clip_span(self.clip_len, self.stride), 0)
        start = int(torch.randint(last_start + 1, ()))
        wanted = clip_indices(num_frames, start, self.clip_len, self.stride)
        needed = set(wanted.tolist())
        got: dict[int, np.ndarray] = {}
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = Fraction(stream.average_rate)
            width, height = resized_size(
                stream.codec_context.width, stream.codec_context.height, self.short_side
            )
            first = int(wanted.min())
            # Same fast resize as extraction: YUV scaling, then RGB conversion, each with a
            # reformatter kept across frames (frame.to_ndarray(width=...) would rebuild the
            # swscale context for every frame and be several times slower).
            scaler, to_rgb = VideoReformatter(), VideoReformatter()
            # Seek lands on the key frame at or before the first wanted frame.
            container.seek(int(first / rate / stream.time_base), stream=stream)
            for frame in container.decode(stream):
                i = round(frame.pts * stream.time_base * rate)
                if i in needed:
                    small = scaler.reformat(
                        frame, width=width, height=height, interpolation="AREA", threads=1
                    )
                    got[i] = to_rgb.reformat(small, format="rgb24", threads=1).to_ndarray()
                    if len(got) == len(needed):
                        break
        clip = torch.from_numpy(np.stack([got[i] for i in wanted.tolist()]))
        return {"video": self.transform(clip), "label": 0, "index": index}


def _clips_per_second(dataset: Dataset, batch: int, workers: int, batches: int) -> float:
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=workers > 0,
    )
    done = 0
    it = iter(loader)
    next(it)  # warm-up: worker start-up, first file opens
    start = time.perf_counter()
    while done < batches:
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            continue
        done += 1
    return batches * batch / (time.perf_counter() - start)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The source videos both benchmarks make (UCF101-like by default) and their extraction."""
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--short-side", type=int, default=128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_source_arguments(parser)
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--clip-len", type=int, default=16)
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per setting")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--gop", type=int, default=300, help="max frames between key frames")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        paths = make_source_videos(
            root / "videos", args.videos, args.frames, args.width, args.height, args.gop
        )
        t1 = time.perf_counter()
        manifest = extract_shard(
            "ucf101",
            root / "videos",
            "Bench",
            root / "frames",
            short_side=args.short_side,
            codec="jpeg",
            quality=args.quality,
        )
        t2 = time.perf_counter()
        frames = {v["path"]: v["frames"] for v in manifest["videos"]}
        list_file = root / "list.csv"
        list_file.write_text(
            "path,label,class,frames\n"
            + "".join(f"{p},0,Bench,{n}\n" for p, n in sorted(frames.items()))
        )
        sources = [(p, frames[f"Bench/{p.name}"]) for p in sorted(paths)]
        print(
            f"made {len(paths)} videos of {args.frames} frames {args.width}x{args.height} "
            f"(mpeg4, key frames every <= {args.gop}) in "
            f"{t1 - t0:.1f} s; extracted in {t2 - t1:.1f} s"
        )

        def crop(clip: torch.Tensor) -> torch.Tensor:
            return augment(clip, args.crop)

        print(f"\nclips/s, {args.clip_len} frames -> {args.crop}^2, batch {args.batch}")
        print(f"{'stride':>6} {'workers':>7} {'frame files':>12} {'PyAV decode':>12} {'ratio':>6}")
        for stride in args.strides:
            stored = ClipDataset(
                list_file, root / "frames", clip_len=args.clip_len, stride=stride, transform=crop
            )
            decoded = SourceClipDataset(sources, args.clip_len, stride, args.short_side, crop)
            for workers in args.workers:
                a = _clips_per_second(stored, args.batch, workers, args.batches)
                b = _clips_per_second(decoded, args.batch, workers, args.batches)
                print(f"{stride:>6} {workers:>7} {a:>12.1f} {b:>12.1f} {a / b:>5.1f}x")


if __name__ == "__main__":
    main()
