"""GPU benchmark: pretraining throughput, model-FLOPs utilisation, memory, and the real loop.

One command on a machine with a GPU (not yet run on one). The most telling figures run first and
nothing starts after `--budget` (300 s by default), so a run should end within about 8 minutes
(an estimate: one torch.compile can take minutes); what it skipped is listed in the JSON:

    .venv/bin/python bench/gpu.py --out bench/gpu.json

For r3d_18 and i3d at 16x112^2 and 16x224^2, bf16 autocast, with channels_last_3d and
torch.compile each on and off, it measures one VTDL training step (anchor and temporal negative
through the query encoder with backward, the positive through the key encoder, InfoNCE against
the queue, Adam step): triplets/s, the step's FLOPs (counted by torch's FlopCounterMode, so
MFU = counted FLOPs / time / the card's dense bf16 peak from PEAK_TFLOPS), peak memory, and the
largest batch that fits (doubling until out of memory). Then the end-to-end `vtdl pretrain`
on the paper presets (I3D at 16x224^2, r3d_18 at 16x112^2) for a few hundred steps each on
generated frames, data path included, against the bare step at the same batch. `--tiny`
runs the same code on the CPU at toy sizes in seconds (what CI runs, tests/test_bench.py).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,  # an unspecified H100: the lowest variant's peak, so MFU is not overstated
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # the most specific name first
        if key in name:
            return PEAK_TFLOPS[key]
    return None


def build(backbone: str, options: dict, device: torch.device, channels_last: bool, compiled: bool):
    from vtdl.models import build_backbone
    from vtdl.pretext import TemporalMoCo

    model = TemporalMoCo(build_backbone(backbone, **options), queue_size=4096).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    step_model = torch.compile(model) if compiled else model
    return model, step_model, optimizer


def make_views(batch: int, frames: int, side: int, device: torch.device, channels_last: bool):
    views = [torch.randn(batch, 3, frames, side, side, device=device) for _ in range(3)]
    if channels_last:
        views = [v.contiguous(memory_format=torch.channels_last_3d) for v in views]
    return views


def train_step(step_model, optimizer, views, amp: torch.dtype | None) -> torch.Tensor:
    device_type = views[0].device.type
    context = (
        torch.autocast(device_type, dtype=amp)
        if amp
        else torch.autocast(device_type, enabled=False)
    )
    with context:
        out = step_model(*views)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    return out["loss"].detach()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_figures(args, device, backbone, options, frames, side, channels_last, compiled, amp):
    """Triplets/s, counted FLOPs, MFU and peak memory of one configuration."""
    model, step_model, optimizer = build(backbone, options, device, channels_last, compiled)
    views = make_views(args.batch, frames, side, device, channels_last)
    for _ in range(args.warmup):  # compilation, cudnn autotuning
        train_step(step_model, optimizer, views, amp)
    with FlopCounterMode(display=False) as counter:  # eager: the counter sees every op
        train_step(model, optimizer, views, amp)
    flops = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(step_model, optimizer, views, amp)
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    peak = peak_tflops(device)
    return {
        "backbone": backbone,
        "clip": f"{frames}x{side}x{side}",
        "channels_last": channels_last,
        "compile": compiled,
        "batch": args.batch,
        "triplets_per_s": round(args.batch / seconds, 2),
        "gflop_per_step": round(flops / 1e9, 3),
        "mfu": round(flops / seconds / (peak * 1e12), 4) if peak else None,
        "peak_memory_gib": (
            round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda"
            else None
        ),
    }


def largest_batch(device, backbone, options, frames, side, amp, limit: int) -> int | None:
    """The largest power-of-two batch whose training step fits in memory (None on the CPU)."""
    if device.type != "cuda":
        return None
    fits, batch = 0, 1
    while batch <= limit:
        try:
            model, _, optimizer = build(backbone, options, device, True, False)
            train_step(model, optimizer, make_views(batch, frames, side, device, True), amp)
            sync(device)
            fits = batch
        except torch.OutOfMemoryError:
            break
        finally:
            model = optimizer = None
            torch.cuda.empty_cache()
        batch *= 2
    return fits


# The paper presets the end-to-end loop runs, stacked as on the command line: I3D at 16x224^2
# (the UCF101 preset) and r3d_18 at 16x112^2 (stacked on it: the MFU goal's configuration).
E2E_PRESETS = (("ucf101.yaml",), ("ucf101.yaml", "r3d_18.yaml"))


def end_to_end(args, device, presets: tuple[str, ...]) -> dict[str, Any]:
    """`vtdl pretrain` with the stacked presets' augmentation and model on generated frame
    files (4:3 frames at the short side the stack extracts), against the bare step of the same
    model and batch. `--tiny`: params.yaml's embedded settings instead."""
    from run import write_frame_set

    from vtdl import pretrain as stage
    from vtdl.config import load_settings, load_yaml

    settings = load_settings(str(ROOT / "params.yaml"), "pretrain")
    short_side = load_settings(str(ROOT / "params.yaml"), "extract")["short_side"]
    for name in presets:
        preset = load_yaml(ROOT / "workflow" / "presets" / name)
        settings.update(preset.get("pretrain", {}))
        short_side = preset.get("extract", {}).get("short_side", short_side)
    # 4 steps per epoch over a small set, repeated: the loader's work per step is the same as
    # on a big set, and the generated files stay small (JPEG noise frames, a pessimistic codec
    # load: natural frames decode faster).
    videos = args.batch * 4
    settings.update(
        epochs=max(1, args.e2e_steps // 4), checkpoint_every=1000,
        queue_size=min(settings["queue_size"], videos // 2), batch_size=args.batch,
        device=device.type, num_workers=args.workers,
    )  # fmt: skip
    size = (48, 64) if args.tiny else (short_side, round(short_side * 4 / 3))
    length = settings["clip_len"] * settings["stride"] * 2 + 8  # room for the temporal negative
    codec = "raw" if args.tiny else "jpeg"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frames, lists = write_frame_set(root, videos, frames=length, size=size, codec=codec)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        cli = argparse.Namespace(
            method="vtdl", backbone=settings["backbones"][0], seed=0, dataset="bench",
            lists=str(lists), frames=str(frames), out=str(root / "run"), threads=0,
        )  # fmt: skip
        summary = stage.pretrain(cli, settings)
    loop = summary["metrics"]["pretrain/epoch/clips_per_s"]
    side, clip_len = settings["crop_size"], settings["clip_len"]
    backbone = settings["backbones"][0]
    options = settings.get("backbone_options", {}).get(backbone, {})
    amp = torch.bfloat16 if device.type == "cuda" else None
    bare = step_figures(args, device, backbone, options, clip_len, side, False, False, amp)
    return {
        "presets": list(presets),
        "backbone": backbone,
        "clip": f"{clip_len}x{side}x{side}",
        "steps": args.e2e_steps,
        "loop_clips_per_s": round(loop, 2),
        "bare_step_clips_per_s": bare["triplets_per_s"],
        "loop_vs_bare": round(loop / bare["triplets_per_s"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (seconds)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--e2e-steps", type=int, default=200)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds; what has not started by then is skipped (and listed), so that one run "
        "fits a short GPU slot",
    )
    parser.add_argument("--out", help="also write the figures as JSON here (after each one)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        args.batch, args.steps, args.warmup, args.e2e_steps, args.workers = 4, 2, 1, 3, 0
        grid = [("small3d", {"channels": [4, 8, 8, 16]}, 4, 16)]
        compile_options = [False]
    else:
        grid = [(b, {}, 16, side) for b in ("r3d_18", "i3d") for side in (112, 224)]
        compile_options = [False, True]
    amp = torch.bfloat16 if device.type == "cuda" else None
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "peak_bf16_tflops": peak_tflops(device),
        "steps": [],
        "end_to_end": [],
        "largest_batch": {},
        "skipped": [],
    }

    def step(*config) -> None:
        results["steps"].append(step_figures(args, device, *config, amp))

    def loop(presets: tuple[str, ...]) -> None:
        results["end_to_end"].append(end_to_end(args, device, presets))

    def fits(key: str, *config) -> None:
        results["largest_batch"][key] = largest_batch(device, *config, amp, 1024)

    # Most telling first, so that a run cut short still answers the goals: the eager steps
    # (r3d_18 at 16x112^2, the MFU goal's, leads), the end-to-end loops, then torch.compile
    # (compiling takes minutes) and the largest batches.
    tasks: list[tuple[str, Callable[[], None]]] = []
    for compiled in compile_options:
        for backbone, options, frames, side in grid:
            for channels_last in (False, True):
                config = (backbone, options, frames, side, channels_last, compiled)
                label = f"step {backbone} {frames}x{side}x{side} cl={channels_last} c={compiled}"
                tasks.append((label, functools.partial(step, *config)))
        if not compiled:
            for presets in [()] if args.tiny else E2E_PRESETS:
                label = "end-to-end " + " + ".join(presets or ("tiny",))
                tasks.append((label, functools.partial(loop, presets)))
    for backbone, options, frames, side in grid:
        key = f"{backbone} {frames}x{side}x{side}"
        config = (backbone, options, frames, side)
        tasks.append((f"largest batch {key}", functools.partial(fits, key, *config)))

    def save() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    start = time.perf_counter()
    for label, task in tasks:
        if time.perf_counter() - start >= args.budget:
            results["skipped"].append(label)
            print(f"gpu.py: skipped (past --budget {args.budget:g} s): {label}", flush=True)
            continue
        task()
        print(json.dumps({"done": label, "elapsed_s": round(time.perf_counter() - start)}))
        save()  # a run stopped from outside keeps what it measured
    save()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
