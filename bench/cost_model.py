"""Cost model of a pretraining run: counted FLOPs per clip and per epoch, queue memory, and an
*estimate* of GPU hours per epoch (README "Cost model").

FLOPs are counted, not timed: torch's FlopCounterMode runs each backbone on meta tensors (no
data, no compute, seconds on any machine) and adds up the convolutions and matrix products.
One training triplet costs, per method: the anchor through the query encoder with its backward
(about 3x a forward), the temporal negative likewise (moco_td, vtdl), and the positive through
the key encoder without gradient (1x). GPU hours per epoch divide the counted FLOPs by an
assumed sustained throughput (`--sustained-tflops`, default 100: about 10% of an H100's dense
bf16 peak, a cautious figure for 3D convolutions); that part is an estimate, not a
measurement, until the GPU benchmark replaces it. Asserts nothing.

    python bench/cost_model.py                    # the presets' backbones and clip sizes
    python bench/cost_model.py --videos 240000    # e.g. the full Kinetics-400 training set
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from vtdl.models import build_backbone

# (name, backbone, constructor options, frames, crop, training videos, queue K, dim)
SETTINGS = [
    ("embedded default", "small3d", {"channels": [16, 16, 32, 64]}, 8, 32, 720, 512, 128),
    ("UCF101 preset", "i3d", {}, 16, 224, 9537, 5000, 128),
    ("HMDB51 preset", "i3d", {}, 16, 224, 3570, 3553, 128),
    ("Kinetics-400 1/10 preset", "i3d", {}, 16, 224, 23464, 12500, 128),
    ("Kinetics-400, all of train", "i3d", {}, 16, 224, 240000, 65536, 128),
    ("UCF101 with r3d_18", "r3d_18", {}, 16, 112, 9537, 5000, 128),
]
# Forward-pass equivalents of one triplet: query pass + backward (3x) per view with gradient,
# plus the key encoder's forward (1x).
PASSES = {"moco": 3 + 1, "moco_td": 3 + 3 + 1, "vtdl": 3 + 3 + 1}


def forward_flops(backbone: str, options: dict, frames: int, crop: int) -> int:
    """FLOPs of one clip through the backbone (2 per multiply-add), counted on meta tensors."""
    with torch.device("meta"):
        model = build_backbone(backbone, **options)
        clip = torch.empty(1, 3, frames, crop, crop)
    with FlopCounterMode(display=False) as counter:
        model(clip)
    return int(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, help="training videos (default: each preset's)")
    parser.add_argument("--sustained-tflops", type=float, default=100.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    rows = []
    for name, backbone, options, frames, crop, videos, queue, dim in SETTINGS:
        videos = args.videos or videos
        clip = forward_flops(backbone, options, frames, crop)
        epoch = clip * PASSES["vtdl"] * videos
        rows.append(
            {
                "setting": name,
                "backbone": backbone,
                "clip": f"{frames}x{crop}x{crop}",
                "gflops_per_clip_forward": clip / 1e9,
                "gflops_per_vtdl_triplet": clip * PASSES["vtdl"] / 1e9,
                "videos": videos,
                "pflops_per_epoch": epoch / 1e15,
                "gpu_hours_per_epoch_estimate": epoch / (args.sustained_tflops * 1e12) / 3600,
                "queue_mib": queue * dim * 4 / 2**20,
            }
        )
    print(
        f"| setting | clip | GFLOPs / clip (forward) | GFLOPs / vtdl triplet | videos | "
        f"PFLOPs / epoch | GPU h / epoch (estimate at {args.sustained_tflops:g} TFLOP/s) | "
        "queue MiB |"
    )
    print("|:---|:---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['setting']} ({r['backbone']}) | {r['clip']} | "
            f"{r['gflops_per_clip_forward']:.3g} | {r['gflops_per_vtdl_triplet']:.3g} | "
            f"{r['videos']:,} | {r['pflops_per_epoch']:.3g} | "
            f"{r['gpu_hours_per_epoch_estimate']:.2g} | {r['queue_mib']:.2g} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
