"""Where and how training runs (vtdl.runtime): the memory format is honoured on the CPU too."""

from __future__ import annotations

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
