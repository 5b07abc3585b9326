"""Where and how training runs (vtdl.runtime): the memory format is honoured on the CPU too,
and malloc keeps the blocks a loader frees."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from vtdl.models import build_backbone
from vtdl.runtime import select_runtime


def test_channels_last_places_model_and_clips_on_the_cpu():
    """`channels_last: true` used to be ignored without CUDA; on the CPU it now converts the
    model and every 5-d batch, and the default keeps the contiguous format."""
    runtime = select_runtime("cpu", "auto", channels_last=True)
    assert runtime.device.type == "cpu" and runtime.amp_dtype is None
    backbone = runtime.place(build_backbone("small3d", channels=[4, 4, 8, 8]))
    weight = backbone.features[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not weight.is_contiguous()
    clips = runtime.to_device(torch.randn(2, 3, 4, 8, 8))
    assert clips.is_contiguous(memory_format=torch.channels_last_3d)
    # Same model, same input: the features agree with the default format to float rounding.
    default = select_runtime("cpu", "auto", channels_last=False)
    reference = build_backbone("small3d", channels=[4, 4, 8, 8])
    reference.load_state_dict(backbone.state_dict())
    default.place(reference).eval()
    backbone.eval()
    plain = torch.randn(2, 3, 4, 8, 8)
    assert default.to_device(plain).is_contiguous()
    torch.testing.assert_close(backbone(runtime.to_device(plain)), reference(plain))


_REUSE_SCRIPT = """
import ctypes, resource, sys
if sys.argv[1] == "keep":
    from vtdl.runtime import keep_freed_memory
    assert keep_freed_memory()
elif sys.argv[1] == "stage":  # what every torch stage runs first
    import argparse
    from vtdl.training import set_up_process
    set_up_process(argparse.Namespace(threads=0))
libc = ctypes.CDLL("libc.so.6")
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = Mallinfo2
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = b"x" * (16 << 20)  # 16 MiB from malloc, every page written
del block
kept = libc.mallinfo2().fordblks  # free bytes malloc holds (not handed back to the kernel)
before = faults()
block = b"x" * (16 << 20)
print(kept, faults() - before)
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)
def test_keep_freed_memory_reuses_a_freed_block_instead_of_faulting_in_new_pages():
    """A loader makes and drops clip-sized blocks: with glibc's defaults the first such block
    is mapped and handed back to the kernel when freed, and its successor takes the page
    faults again (4,096 of them with 4 KiB pages)."""

    def after_one_block(mode: str) -> tuple[int, int]:
        run = subprocess.run(
            [sys.executable, "-c", _REUSE_SCRIPT, mode], capture_output=True, text=True, check=True
        )
        kept, faults = run.stdout.split()[-2:]
        return int(kept), int(faults)

    kept, _ = after_one_block("default")
    assert kept < 16 << 20  # handed back (the faults then depend on the kernel's page size)
    kept, faults = after_one_block("keep")
    assert kept >= 16 << 20 and faults < 300
    kept, faults = after_one_block("stage")  # the pretraining and downstream jobs' set-up
    assert kept >= 16 << 20 and faults < 300
