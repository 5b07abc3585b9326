"""`make bench`: the project's speed and memory figures, measured side by side on this machine.

Writes bench/results.json (one key per figure, plus the machine, date, commit and command) and
bench/results.md (the table the README shows). Every ratio compares two things measured in the
same run, alternating (A, B, A, B, ...; medians), so a busy machine slows both alike. Figures
whose prerequisite is missing are recorded as null with the reason. Asserts nothing.

    .venv/bin/python bench/run.py                 # all figures (a few minutes on 2 cores)
    .venv/bin/python bench/run.py --only pretrain_efficiency peak_rss_mb

Figures (README "Benchmarks"):
  noop_rerun_s          `make reproduce` with everything up to date (median of 5), next to
                        `snakemake_floor_s`, a one-rule Snakemake workflow doing nothing
  loader_vs_source_decode
                        augmented 16x112^2 clips (stride 4) per second from the frame store
                        (JPEG q90, short side 128) / the same clips decoded from UCF101-like
                        source videos with PyAV, same augmentation, one process; also clips
                        per CPU-second of each (per core: PyAV's decode threads counted)
  extract_vs_decode_only
                        frames/s of `vtdl extract` (params.yaml's codec; JPEG q90 as well) /
                        frames/s of a bare PyAV decode of the same videos that keeps nothing
  pretrain_efficiency   clips/s of the real `vtdl pretrain` loop (loading, augmentation, TCA,
                        both encoders, queue, MLflow logging) / clips/s of the same model's
                        forward, backward and step on clips already in memory, same threads;
                        and the same loop without augmentation (no rotation, no jitter)
  augment_clips_per_s_per_core
                        the UCF101 preset's augmentation (16x224^2, rotation, crop, jitter, TCA)
                        per clip in the loader, and split: uint8 window in the loader, batched
                        float work on the device (the CPU without a GPU); clips per core-second
  peak_rss_mb           peak resident memory of `vtdl extract` and of `vtdl pretrain` on a
                        small and a ten times larger data set (constant if memory is bounded)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results.json"
TABLE = ROOT / "bench" / "results.md"


# ---------------------------------------------------------------------------------- helpers


def alternate(*measures: Callable[[], float], rounds: int) -> tuple[float, ...]:
    """The median of each measure, measured in turns: a, b, a, b, ... (or a, b, c, a, ...)."""
    values: list[list[float]] = [[] for _ in measures]
    for _ in range(rounds):
        for measure, taken in zip(measures, values, strict=True):
            taken.append(measure())
    return tuple(statistics.median(taken) for taken in values)


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


# A small launcher between this (large) process and the measured one: a child forked from here
# would start with this process's resident pages, and the kernel's peak-RSS figure keeps them
# across exec. The launcher execs afresh, forks a small child that execs the command, and
# prints the child's own peak (ru_maxrss, KiB on Linux).
_RSS_LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss}))
"""


def peak_rss_mb(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Run `command` to completion; its own peak resident set size in MB."""
    done = subprocess.run([sys.executable, "-c", _RSS_LAUNCHER, *command], cwd=cwd, env=env,
                          capture_output=True, text=True)  # fmt: skip
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["exit"] != 0:
        raise RuntimeError(f"{shlex.join(command)} failed: {done.stderr[-2000:]}")
    return report["maxrss_kib"] / 1024


def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        gpu = listing.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version()}


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return done.stdout.strip() + ("+changes" if dirty else "")


def one_thread_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------- data


def write_frame_set(
    root: Path, videos: int, frames: int = 48, size: tuple[int, int] = (40, 53), codec: str = "raw"
) -> tuple[Path, Path]:
    """`videos` frame files of noise and their split list; returns (frames root, lists root).

    By default raw frames of the embedded set's size as extracted (64x48 videos at params.yaml's
    short side 40), so the loader does what it does in the pipeline (no resize before the crop).
    """
    from vtdl.data.framestore import frame_file_path, write_frames

    rng = np.random.default_rng(0)
    frames_root, lists = root / "frames", root / "splits"
    (lists / "split1").mkdir(parents=True)
    rows = ["path,label,class,frames"]
    for v in range(videos):
        rel = f"c{v % 10}/v{v}.avi"
        video = rng.integers(0, 255, (frames, *size, 3), dtype=np.uint8)
        write_frames(frame_file_path(frames_root, rel), video, codec=codec)
        rows.append(f"{rel},{v % 10},c{v % 10},{frames}")
    (lists / "split1" / "train.csv").write_text("\n".join(rows) + "\n")
    return frames_root, lists


def write_avi(path: Path, frames: Iterator[np.ndarray], gop: int = 12) -> None:
    """An mpeg4 .avi at 25 fps (quantiser 4) with at most `gop` frames between key frames."""
    import av  # here, not at the top: bench/gpu.py imports this module where PyAV may be missing

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("mpeg4", rate=Fraction(25))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.gop_size = gop
                stream.codec_context.qmin = stream.codec_context.qmax = 4
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_tiny_videos(folder: Path, videos: int, frames: int = 24) -> None:
    """`videos` small mpeg4 .avi files (64x48 noise) in one UCF101-style class folder."""
    rng = np.random.default_rng(0)
    for v in range(videos):
        noise = (rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(frames))
        write_avi(folder / f"v_Bench_g{v // 4 + 1:02d}_c{v % 4 + 1:02d}.avi", noise)


def make_source_videos(
    root: Path, videos: int, frames: int = 150, width: int = 320, height: int = 240
) -> list[Path]:
    """UCF101-like videos under root/Bench/: a textured background panning, a moving block.

    Key frames at most 300 frames apart, xvid's default maximum interval (x264's is 250):
    UCF101 and HMDB51 are xvid/divx .avi files and Kinetics clips x264 .mp4, so a few-second
    clip usually has a single key frame and a seek has to decode from the start.
    """
    rng = np.random.default_rng(0)
    paths = []
    for v in range(videos):
        # Low-frequency texture (upsampled noise) so the codec has realistic work to do.
        coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
        texture = np.repeat(np.repeat(coarse, 8, 0), 8, 1)
        dx, dy = (int(d) for d in rng.integers(-3, 4, 2))

        def video(texture: np.ndarray = texture, dx: int = dx, dy: int = dy) -> Iterator:
            for t in range(frames):
                frame = np.roll(texture, (t * dy, t * dx), axis=(0, 1))[:height, :width].copy()
                x = (t * 4) % (width - 40)
                frame[height // 3 : height // 3 + 40, x : x + 40] = (255, 40, 40)
                yield frame

        path = root / "Bench" / f"v_Bench_g{v // 4 + 1:02d}_c{v % 4 + 1:02d}.avi"
        write_avi(path, video(), gop=300)
        paths.append(path)
    return paths


def pretrain_settings(**changes: Any) -> dict[str, Any]:
    from vtdl.config import load_settings

    settings = load_settings(str(ROOT / "params.yaml"), "pretrain")
    settings.update(num_workers=0, checkpoint_every=1000, device="cpu")
    settings.update(changes)
    return settings


def pretrain_command(frames: Path, lists: Path, out: Path, settings: dict) -> list[str]:
    return [
        str(BIN / "vtdl"),
        "pretrain",
        "--method",
        "vtdl",
        "--backbone",
        "small3d",
        "--seed",
        "0",
        "--dataset",
        "bench",
        "--lists",
        str(lists),
        "--frames",
        str(frames),
        "--out",
        str(out),
        "--threads",
        "1",
        "--settings",
        json.dumps(settings),
    ]


# ---------------------------------------------------------------------------------- figures


# What `make bench ARGS="--project ..."` leaves in this process's environment: make exports a
# command-line variable to its recipes and passes it on to sub-makes (MAKEFLAGS), so the
# project's `make reproduce` would hand bench's ARGS to Snakemake.
_PARENT_MAKE_VARIABLES = {"ARGS", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKELEVEL"}


def project_make_env() -> dict[str, str]:
    """This process's environment without what a `make bench` around it put there."""
    return {k: v for k, v in os.environ.items() if k not in _PARENT_MAKE_VARIABLES}


def noop_rerun(project: Path) -> dict[str, Any]:
    """A no-op `make reproduce` next to a no-op one-rule Snakemake workflow."""
    env = project_make_env()
    dry = subprocess.run(["make", "dry-run"], cwd=project, env=env, capture_output=True, text=True)
    if dry.returncode != 0 or "Nothing to be done" not in dry.stdout + dry.stderr:
        return {
            "noop_rerun_s": None,
            "noop_rerun_note": f"{project}: not up to date (run make reproduce)",
        }
    with tempfile.TemporaryDirectory() as tmp:
        floor = Path(tmp)
        (floor / "Snakefile").write_text(
            'rule all:\n    output: "x"\n    shell: "touch {output}"\n'
        )
        snakemake = [str(BIN / "snakemake"), "--cores", "1", "--quiet", "all"]
        subprocess.run(snakemake, cwd=floor, check=True, capture_output=True)
        noop, bare = alternate(
            lambda: timed(["make", "reproduce"], project, env),
            lambda: timed(snakemake, floor),
            rounds=5,
        )
    return {"noop_rerun_s": round(noop, 2), "snakemake_floor_s": round(bare, 2)}


# The augmentation switched off (a uint8 crop, the float conversion and the normalisation
# remain): the same loop then shows what reading, drawing, collating and TCA alone cost.
NO_AUGMENTATION = {"rotation": 0.0, "color_jitter": [0.0, 0.0, 0.0, 0.0]}


def pretrain_efficiency() -> dict[str, Any]:
    """The real pretraining loop against its bare model steps, one thread each; and the same
    loop without augmentation, the most that making the augmentation cheaper could give."""
    import torch

    from vtdl import pretrain as stage
    from vtdl.augment import JITTER_OPS, ClipAugment
    from vtdl.data.triplets import TripletDataset

    torch.set_num_threads(1)
    settings = pretrain_settings(epochs=3, queue_size=128)
    batch = settings["batch_size"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frames, lists = write_frame_set(root, 320)  # 10 steps of 32 per epoch
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        runs = iter(range(100))

        def real(changes: dict[str, Any]) -> float:
            job = {**settings, **changes}
            parser = argparse.ArgumentParser()
            stage.add_arguments(parser)
            command = pretrain_command(frames, lists, root / f"run{next(runs)}", job)
            args = parser.parse_args(command[2:])  # the job's own command line, in process
            summary = stage.pretrain(args, job)
            return summary["metrics"]["pretrain/epoch/clips_per_s"]  # the last epoch, warm

        augment = ClipAugment(
            settings["crop_size"],
            settings["resize_short"],
            rotation=settings["rotation"],
            **dict(zip(JITTER_OPS, settings["color_jitter"], strict=True)),
        )
        dataset = TripletDataset(
            lists / "split1" / "train.csv",
            frames,
            settings["clip_len"],
            settings["stride"],
            augment,
            seed=0,
        )
        items = [dataset[i] for i in range(batch)]
        views = {
            k: torch.stack([item[k] for item in items]) for k in ("anchor", "positive", "negative")
        }
        model = stage.build_model("vtdl", "small3d", settings, 10, 0)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"])
        model.train()

        def bare() -> float:
            steps = 30
            start = time.perf_counter()
            for _ in range(steps):
                out = model(views["anchor"], views["positive"], views["negative"])
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                optimizer.step()
            return steps * batch / (time.perf_counter() - start)

        loop, step, plain = alternate(
            lambda: real({}), bare, lambda: real(NO_AUGMENTATION), rounds=2
        )
    return {
        "pretrain_efficiency": round(loop / step, 3),
        "pretrain_loop_clips_per_s": round(loop, 1),
        "pretrain_bare_step_clips_per_s": round(step, 1),
        "pretrain_efficiency_no_augmentation": round(plain / step, 3),
        "pretrain_loop_no_augmentation_clips_per_s": round(plain, 1),
    }


# Source videos of the loader and extraction figures: UCF101-like 320x240 mpeg4, extracted to
# the paper's short side 128 (16x112^2 clips at stride 4 are cut from it).
SOURCE_VIDEOS, SOURCE_SHORT_SIDE = 16, 128


class SourceClipDataset:
    """The loader's baseline: each clip decoded from its source video with PyAV (seek to the
    key frame before the clip, decode to its last frame, resize like extraction)."""

    def __init__(self, videos: list[tuple[Path, int]], clip_len: int, stride: int, transform):
        self.videos, self.clip_len, self.stride = videos, clip_len, stride
        self.transform = transform

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        from vtdl.data.clips import clip_indices, clip_span
        from vtdl.data.extract import _DecodedFrames, _open_video

        path, num_frames = self.videos[index]
        last_start = max(num_frames - clip_span(self.clip_len, self.stride), 0)
        start = int(torch.randint(last_start + 1, ()))
        wanted = clip_indices(num_frames, start, self.clip_len, self.stride).tolist()
        needed, got = set(wanted), {}
        container, stream = _open_video(path)
        with container:
            rate = Fraction(stream.average_rate)
            # Seek lands on the key frame at or before the first wanted frame.
            container.seek(int(min(wanted) / rate / stream.time_base), stream=stream)
            decoded = _DecodedFrames(container, stream, SOURCE_SHORT_SIDE)
            for frame, image in decoded.with_frames():
                i = round(frame.pts * stream.time_base * rate)
                if i in needed:
                    got[i] = image
                    if len(got) == len(needed):
                        break
        clip = torch.from_numpy(np.stack([got[i] for i in wanted]))
        return {"video": self.transform(clip), "label": 0, "index": index}


def _loader_clips(dataset: Any, batch: int, batches: int) -> tuple[float, float]:
    """(clips per second, clips per CPU-second) of `batches` batches of a one-process loader."""
    import resource

    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0)
    done, it = 0, iter(loader)
    wall = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    while done < batches:
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            continue
        done += 1
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    return batches * batch / (time.perf_counter() - wall), batches * batch / max(cpu_s, 1e-9)


def loader_vs_source_decode() -> dict[str, Any]:
    """Augmented 16x112^2 clips (stride 4) from the frame store vs decoded from the source
    videos, same augmentation (ClipAugment: random 112^2 crop of the 128 short side,
    normalisation), one process and one torch thread each (workers: 0)."""
    import torch

    from vtdl.augment import ClipAugment
    from vtdl.data.clips import ClipDataset
    from vtdl.data.extract import extract_shard

    torch.set_num_threads(1)
    augment = ClipAugment(112, SOURCE_SHORT_SIDE, rotation=0, brightness=0, contrast=0,
                          saturation=0, hue=0)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_source_videos(root / "videos", SOURCE_VIDEOS)
        manifest = extract_shard(
            "ucf101", root / "videos", "Bench", root / "frames",
            short_side=SOURCE_SHORT_SIDE, codec="jpeg", quality=90,
        )  # fmt: skip
        counts = {v["path"]: v["frames"] for v in manifest["videos"]}
        (root / "list.csv").write_text(
            "path,label,class,frames\n"
            + "".join(f"{p},0,Bench,{n}\n" for p, n in sorted(counts.items()))
        )
        stored = ClipDataset(root / "list.csv", root / "frames", 16, 4, transform=augment)
        source = SourceClipDataset(
            [(p, counts[f"Bench/{p.name}"]) for p in sorted(paths)], 16, 4, augment
        )
        figures: dict[str, list[tuple[float, float]]] = {"store": [], "source": []}
        for _ in range(5):
            figures["store"].append(_loader_clips(stored, 8, 8))
            figures["source"].append(_loader_clips(source, 8, 4))
    (store, store_cpu), (src, src_cpu) = (
        tuple(statistics.median(x) for x in zip(*figures[k], strict=True)) for k in figures
    )
    return {
        "loader_vs_source_decode": round(store / src, 2),
        "loader_clips_per_s": round(store, 1),
        "source_decode_clips_per_s": round(src, 1),
        "loader_clips_per_cpu_s": round(store_cpu, 1),
        "source_decode_clips_per_cpu_s": round(src_cpu, 1),
    }


def _decode_only(paths: list[Path]) -> None:
    """Demux and decode every frame, as extraction does (frame threads), keeping nothing."""
    import av

    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                pass


def extract_vs_decode_only() -> dict[str, Any]:
    """`vtdl extract` (params.yaml's codec, and JPEG q90) at short side 128 vs a bare PyAV
    decode of the same videos that writes nothing; frames per second, alternating."""
    from vtdl.config import load_settings
    from vtdl.data.extract import extract_shard

    codec = load_settings(str(ROOT / "params.yaml"), "extract")["codec"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_source_videos(root / "videos", SOURCE_VIDEOS)
        frames = SOURCE_VIDEOS * 150
        runs = iter(range(100))
        kib_per_frame: dict[str, float] = {}

        def decode() -> float:
            start = time.perf_counter()
            _decode_only(paths)
            return frames / (time.perf_counter() - start)

        def extract(codec: str) -> float:
            out = root / f"frames{next(runs)}"
            start = time.perf_counter()
            extract_shard("ucf101", root / "videos", "Bench", out,
                          short_side=SOURCE_SHORT_SIDE, codec=codec, quality=90)  # fmt: skip
            fps = frames / (time.perf_counter() - start)
            stored = sum(f.stat().st_size for f in out.rglob("*.frames"))
            kib_per_frame[codec] = round(stored / frames / 1024, 1)
            shutil.rmtree(out)
            return fps

        decode()  # warm: page cache, codec tables
        default, bare = alternate(lambda: extract(codec), decode, rounds=5)
        jpeg, bare_jpeg = alternate(lambda: extract("jpeg"), decode, rounds=3)
    return {
        "extract_vs_decode_only": round(default / bare, 3),
        "extract_codec": codec,
        "extract_frames_per_s": round(default),
        "decode_only_frames_per_s": round(bare),
        "extract_jpeg_vs_decode_only": round(jpeg / bare_jpeg, 3),
        "extract_kib_per_frame": kib_per_frame,
    }


def augment_per_core() -> dict[str, Any]:
    """Clips per CPU-second of the UCF101 preset's augmentation (16x224^2 from a short side of
    256, rotation, crop, colour jitter, TCA), one torch thread: per clip in the loader, and
    split (`DeviceClipAugment`: a uint8 window per clip in the loader, the float work in batch
    on the device, which is this CPU when there is no GPU)."""
    import torch
    from torch.utils.data import default_collate

    from vtdl.augment import (
        JITTER_OPS,
        ClipAugment,
        DeviceClipAugment,
        temporal_consistent_augmentation,
    )
    from vtdl.config import load_yaml

    torch.set_num_threads(1)
    paper = load_yaml(ROOT / "workflow" / "presets" / "ucf101.yaml")["pretrain"]
    augment = ClipAugment(
        paper["crop_size"],
        paper["resize_short"],
        rotation=paper["rotation"],
        **dict(zip(JITTER_OPS, paper["color_jitter"], strict=True)),
    )
    split = DeviceClipAugment(augment)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    # Frames as stored at the preset's short side 256 from 320x240 videos.
    clips = [
        torch.from_numpy(rng.integers(0, 256, (paper["clip_len"], 256, 341, 3), dtype=np.uint8))
        for _ in range(8)
    ]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def per_clip() -> float:
        start = time.process_time()
        batch = torch.stack([augment(clip) for clip in clips])
        temporal_consistent_augmentation(batch, 0.1)
        return len(clips) / (time.process_time() - start)

    timings: dict[str, list[float]] = {"loader_half": [], "device_s": [], "cpu_s": []}

    def on_device() -> float:
        start, wall = time.process_time(), time.perf_counter()
        halves = default_collate([split(clip) for clip in clips])
        loader_half = time.process_time() - start
        sync()
        device_start = time.perf_counter()
        temporal_consistent_augmentation(split.apply(halves, device), 0.1)
        sync()
        timings["device_s"].append(time.perf_counter() - device_start)
        timings["loader_half"].append(len(clips) / loader_half)
        cpu = time.process_time() - start
        timings["cpu_s"].append(cpu)
        return len(clips) / (time.perf_counter() - wall)

    on_device()  # warm: CUDA context and kernels
    for values in timings.values():
        values.clear()
    loader, _ = alternate(per_clip, on_device, rounds=3)
    device_rate = len(clips) / statistics.median(timings["device_s"])
    return {
        "augment_clips_per_s_per_core": {
            "loader": round(loader, 2),
            "device_path_loader_half": round(statistics.median(timings["loader_half"]), 1),
            "device_path_device": device.type,
            "device_path_clips_per_s_on_device": round(device_rate, 1),
            "device_path_whole_on_cpu": (
                round(len(clips) / statistics.median(timings["cpu_s"]), 2)
                if device.type == "cpu"
                else None
            ),
        }
    }


def peak_rss() -> dict[str, Any]:
    """Peak RSS of extraction and pretraining at 200 and 2,000 videos."""
    env = one_thread_env()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        for videos in (200, 2000):
            write_tiny_videos(root / f"videos{videos}" / "Bench", videos)
            extract = [
                str(BIN / "vtdl"),
                "extract",
                "--format",
                "ucf101",
                "--videos",
                str(root / f"videos{videos}"),
                "--out",
                str(root / f"extracted{videos}"),
                "--shard",
                "Bench",
                "--short-side",
                "40",
                "--codec",
                "raw",
            ]
            figures[f"extract_{videos}_videos"] = round(peak_rss_mb(extract, ROOT, env), 1)
            frames, lists = write_frame_set(root / f"set{videos}", videos)
            settings = pretrain_settings(epochs=1, queue_size=128)
            command = pretrain_command(frames, lists, root / f"pretrain{videos}", settings)
            figures[f"pretrain_{videos}_videos"] = round(peak_rss_mb(command, ROOT, env), 1)
    return {"peak_rss_mb": figures}


FIGURES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "noop_rerun_s": lambda args: noop_rerun(Path(args.project)),
    "loader_vs_source_decode": lambda args: loader_vs_source_decode(),
    "extract_vs_decode_only": lambda args: extract_vs_decode_only(),
    "augment_clips_per_s_per_core": lambda args: augment_per_core(),
    "pretrain_efficiency": lambda args: pretrain_efficiency(),
    "peak_rss_mb": lambda args: peak_rss(),
}


def short_commit(commit: str) -> str:
    """The first 12 hex digits, and "+changes" when the checkout had uncommitted changes."""
    return commit[:12] + ("+changes" if commit.endswith("+changes") else "")


def table(results: dict[str, Any]) -> str:
    f = results["figures"]
    lines = [
        f"Measured {results['date']} on {results['machine']['cpu']} "
        f"({results['machine']['cores']} cores, GPU: {results['machine']['gpu'] or 'none'}), "
        f"commit {short_commit(results['commit'])}, "
        f"`{results['command']}`.",
        "",
        "| figure | value | goal |",
        "|:---|---:|:---|",
    ]
    if "noop_rerun_s" in f:
        if f["noop_rerun_s"] is None:
            lines.append(
                f"| no-op `make reproduce` | not measured: {f['noop_rerun_note']} | ≤ 2 s |"
            )
        else:
            lines.append(
                f"| no-op `make reproduce` (median of 5) | {f['noop_rerun_s']} s "
                f"(a one-rule Snakemake: {f['snakemake_floor_s']} s) | ≤ 2 s |"
            )
    if "loader_vs_source_decode" in f:
        lines.append(
            f"| loader: augmented 16×112² clips/s from the frame store / decoded from the "
            f"source videos (1 process, 1 thread) | {f['loader_vs_source_decode']}× "
            f"({f['loader_clips_per_s']} / {f['source_decode_clips_per_s']}) | ≥ 3× |"
        )
        lines.append(
            f"| loader clips per CPU-second (per core): frame store / source decode | "
            f"{f['loader_clips_per_cpu_s']} / {f['source_decode_clips_per_cpu_s']} | |"
        )
    if "extract_vs_decode_only" in f:
        lines.append(
            f"| `vtdl extract` ({f['extract_codec']}, short side 128) / bare PyAV decode, "
            f"frames/s | {f['extract_vs_decode_only']}× ({f['extract_frames_per_s']} / "
            f"{f['decode_only_frames_per_s']}); JPEG q90: "
            f"{f['extract_jpeg_vs_decode_only']}× | ≥ 0.5× |"
        )
        sizes = f.get("extract_kib_per_frame", {})
        if sizes:
            lines.append(
                "| stored frame size at short side 128 (320×240 sources), KiB per frame | "
                + " / ".join(f"{codec} {kib}" for codec, kib in sizes.items())
                + " | |"
            )
    if "augment_clips_per_s_per_core" in f:
        a = f["augment_clips_per_s_per_core"]
        where = "this CPU, 1 thread" if a["device_path_device"] == "cpu" else "the GPU"
        lines.append(
            f"| augmentation at the UCF101 preset (16×224², rotation, crop, jitter, TCA), "
            f"clips per core-second: per clip in the loader | {a['loader']} | |"
        )
        lines.append(
            f"| the same on the device in batch: loader's share (uint8 window) per core-second"
            f" / batched part ({where}) clips/s | {a['device_path_loader_half']} / "
            f"{a['device_path_clips_per_s_on_device']} | 16 cores feed an H100 |"
        )
    if "pretrain_efficiency" in f:
        lines.append(
            f"| pretraining loop / bare model step (clips/s, 1 thread) | "
            f"{f['pretrain_efficiency']} ({f['pretrain_loop_clips_per_s']} / "
            f"{f['pretrain_bare_step_clips_per_s']}) | ≥ 0.9 |"
        )
        lines.append(
            f"| the same loop without augmentation (no rotation, no jitter) / bare model step | "
            f"{f['pretrain_efficiency_no_augmentation']} "
            f"({f['pretrain_loop_no_augmentation_clips_per_s']} / "
            f"{f['pretrain_bare_step_clips_per_s']}) | |"
        )
    if "peak_rss_mb" in f:
        rss = f["peak_rss_mb"]
        lines.append(
            f"| peak RSS of `vtdl extract`, 200 / 2,000 videos | "
            f"{rss['extract_200_videos']} / {rss['extract_2000_videos']} MB | constant |"
        )
        lines.append(
            f"| peak RSS of `vtdl pretrain`, 200 / 2,000 videos | "
            f"{rss['pretrain_200_videos']} / {rss['pretrain_2000_videos']} MB | constant |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), help="these figures only")
    parser.add_argument("--project", default=str(ROOT), help="checkout for noop_rerun_s")
    args = parser.parse_args()
    from vtdl.runtime import keep_freed_memory

    # As every torch stage's process does, so the loaders measured are a job's. Extraction,
    # measured in this process too, runs the same with or without it (0.57-0.60x both ways,
    # three alternated pairs on the Xeon); `vtdl extract` does not call it.
    keep_freed_memory()
    figures: dict[str, Any] = {}
    for name in args.only or FIGURES:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        figures.update(FIGURES[name](args))
        print(f"bench: {name} done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    results = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "commit": commit(),
        "command": shlex.join(["python", "bench/run.py", *sys.argv[1:]]),
        "figures": figures,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    TABLE.write_text(table(results))
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
