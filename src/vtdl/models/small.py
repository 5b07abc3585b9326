"""`small3d`: a small, fast 3D CNN for CPU training on the embedded data set.

Four blocks of Conv3d 3x3x3 -> BatchNorm3d -> ReLU with channels 16-32-64-128. The first block
halves the resolution at once (spatial stride 2) because full resolution in layer 1 costs 2.5x
the training time for little gain on 32x32 frames (pilot: 470 vs 190 training clips/s); time is
downsampled only in the last two blocks, so short clips (8 frames) keep some temporal extent.
With the default widths the network has 292,080 parameters (309k with a 128-d projection head).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from vtdl.errors import VtdlError

DEFAULT_CHANNELS = (16, 32, 64, 128)
DEFAULT_SPATIAL_STRIDES = (2, 1, 2, 2)
DEFAULT_TEMPORAL_STRIDES = (1, 1, 2, 2)


def _check_positive_ints(name: str, values: Sequence[int], length: int) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != length or not all(isinstance(v, int) and v >= 1 for v in values):
        raise VtdlError(
            f"backbone 'small3d' option {name}: expected {length} positive integers (one per "
            f"block), got {list(values)}"
        )
    return values


class Small3D(nn.Module):
    """A plain stack of Conv3d 3x3x3 -> BatchNorm3d -> ReLU blocks.

    Input (B, in_channels, T, H, W); output the last feature map (B, feature_dim, T', H', W')
    with T' = T / prod(temporal_strides) and H' = H / prod(spatial_strides) (rounded up per
    block). At 8x32x32 the default gives (B, 128, 2, 4, 4); at 16x112x112 (B, 128, 4, 14, 14).

    Args:
        channels: output channels of each block (default 16-32-64-128).
        spatial_strides: stride in H and W of each block (default 2-1-2-2).
        temporal_strides: stride in T of each block (default 1-1-2-2).
        width: multiplier applied to every entry of `channels` (rounded, at least 1).
        in_channels: channels of the input clip (3 for RGB).
        norm: "batch" (BatchNorm3d, the default) or "group" (GroupNorm of up to 8 groups:
            per-clip statistics, the same whatever the batch and however it is split over
            data-parallel ranks; for tiny per-GPU batches and the DDP equivalence test).
    """

    def __init__(
        self,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        spatial_strides: Sequence[int] = DEFAULT_SPATIAL_STRIDES,
        temporal_strides: Sequence[int] = DEFAULT_TEMPORAL_STRIDES,
        width: float = 1.0,
        in_channels: int = 3,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if norm not in ("batch", "group"):
            raise VtdlError(f"backbone 'small3d' option norm: 'batch' or 'group', got {norm!r}")
        if isinstance(channels, int) or not channels:
            raise VtdlError(
                f"backbone 'small3d' option channels: expected a non-empty list, got {channels!r}"
            )
        depth = len(channels)
        channels = _check_positive_ints("channels", channels, depth)
        spatial_strides = _check_positive_ints("spatial_strides", spatial_strides, depth)
        temporal_strides = _check_positive_ints("temporal_strides", temporal_strides, depth)
        if not width > 0:
            raise VtdlError(f"backbone 'small3d' option width: must be > 0, got {width}")
        widths = [max(1, round(c * width)) for c in channels]

        blocks: list[nn.Module] = []
        previous = in_channels
        for out, s_stride, t_stride in zip(widths, spatial_strides, temporal_strides, strict=True):
            blocks += [
                # No conv bias: the norm right after it removes any constant offset.
                nn.Conv3d(
                    previous,
                    out,
                    kernel_size=3,
                    stride=(t_stride, s_stride, s_stride),
                    padding=1,
                    bias=False,
                ),
                nn.BatchNorm3d(out) if norm == "batch" else nn.GroupNorm(math.gcd(out, 8), out),
                nn.ReLU(inplace=True),
            ]
            previous = out
        self.features = nn.Sequential(*blocks)
        self.feature_dim: int = previous

    def forward(self, clips: Tensor) -> Tensor:
        """(B, C, T, H, W) clips -> (B, feature_dim, T', H', W') feature map."""
        return self.features(clips)
