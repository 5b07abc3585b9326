"""Where and how training runs: device, mixed precision, the `--threads`/`--gpus` options, and
how the process's malloc treats the clip-sized blocks a loader frees (`keep_freed_memory`).

One place for these choices so pretraining and every downstream stage behave alike: CUDA when
present (bf16 autocast where the GPU supports it, else fp16 with a grad scaler), deterministic
fp32 on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import platform
from dataclasses import dataclass

import torch

from vtdl.errors import VtdlError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full fp32
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        # Only fp16 needs loss scaling; a disabled scaler is a transparent pass-through whose
        # state still round-trips through checkpoints.
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move `module` to the device, in the channels_last_3d memory format when chosen."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last_3d)
        return module

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last and batch.dim() == 5:
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        return batch


def add_resource_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--threads` and `--gpus` options of the stages that run torch."""
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's own choice)"
    )
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="GPUs this job holds for its lifetime on a GPU machine (vtdl.gpuslots); "
        "ignored without a GPU",
    )


# glibc's mallopt parameters (malloc.h) and the values `keep_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
_TRIM_THRESHOLD = 64 << 20  # above a collated batch of 8 16x112^2 clips (19 MB) and its copy


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed blocks up to 32 MiB instead of mapping fresh pages.

    By default blocks from 128 KiB are mmap-ed and handed back to the kernel when freed, and
    the heap's free top is trimmed at twice that threshold: a loader that makes and drops
    2.4 MB clips and 19 MB batches takes every page fault again for each one. Measured on the
    2-core Intel Xeon (`make bench`'s loader, augmented 16x112^2 clips from JPEG frames, one
    thread): 166-190 -> 210-238 clips/s; a trim threshold of 32 MiB instead of 64 kept the
    faults (166-177). Memory freed below 64 MiB stays with the process. Returns whether both
    settings were taken (False off glibc, where malloc is left alone).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )


def select_runtime(device: str = "auto", amp: str = "auto", channels_last: bool = False) -> Runtime:
    """Resolve the `device` (auto|cpu|cuda) and `amp` (auto|fp32|bf16|fp16) settings."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise VtdlError("device: 'cuda' requested but no CUDA device is available")
    dev = torch.device(device)
    if dev.type != "cuda" or amp == "fp32":
        amp_dtype = None
    elif amp == "auto":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return Runtime(dev, amp_dtype, channels_last)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
