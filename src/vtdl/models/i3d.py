"""`i3d`: Inflated Inception-v1 (Carreira & Zisserman, CVPR 2017), the paper's default backbone.

Written from the paper's description (its Fig. 3): the 2D Inception-v1 network with batch norm,
every filter and pooling kernel inflated to 3D, trained here from scratch (no ImageNet
inflation). Layer by layer, with output channels:

    Conv3d_1a_7x7     7x7x7 conv, stride 2                  64
    MaxPool3d_2a_3x3  1x3x3 max-pool, stride (1, 2, 2)
    Conv3d_2b_1x1     1x1x1 conv                            64
    Conv3d_2c_3x3     3x3x3 conv                           192
    MaxPool3d_3a_3x3  1x3x3 max-pool, stride (1, 2, 2)
    Mixed_3b, Mixed_3c                                     256, 480
    MaxPool3d_4a_3x3  3x3x3 max-pool, stride 2
    Mixed_4b ... Mixed_4f                                  512, 512, 512, 528, 832
    MaxPool3d_5a_2x2  2x2x2 max-pool, stride 2
    Mixed_5b, Mixed_5c                                     832, 1024

An Inception module concatenates four branches: 1x1x1 conv; 1x1x1 conv -> 3x3x3 conv;
1x1x1 conv -> 3x3x3 conv (I3D uses 3x3x3 where 2D Inception-v1 has 5x5); 3x3x3 max-pool
(stride 1) -> 1x1x1 conv. Every conv is followed by batch norm and ReLU and has no bias.

Padding is TensorFlow-style 'same', as in the original implementation: a layer with stride s
outputs ceil(n / s) positions for an input of n, padding the missing border as evenly as possible
(the extra one at the end). It is computed from the actual input size, so the network runs at any
clip size: 16x112x112 -> (1024, 2, 4, 4), 64x224x224 -> (1024, 8, 7, 7), 8x32x32 -> (1024, 1, 1, 1).
The network returns the Mixed_5c feature map; the classifier (avg-pool, dropout, 1x1x1 conv,
mean over time) is `vtdl.models.heads.ClassifierHead(kind="i3d")`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Triple = tuple[int, int, int]

# Output channels of the Inception modules, as in Inception-v1 / I3D:
# (1x1, 3x3-reduce, 3x3, second-3x3-reduce, second-3x3, pool-projection).
INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# The original (TensorFlow) batch norm uses epsilon 1e-3; PyTorch's default is 1e-5.
BN_EPS = 1e-3


def _triple(value: int | Triple) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    return value


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(front, back) padding so that a kernel/stride layer outputs ceil(size / stride) positions.

    TensorFlow's 'same' rule: total = max((ceil(size / stride) - 1) * stride + kernel - size, 0),
    split as evenly as possible with the odd one at the back.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: Tensor, kernel: Triple, stride: Triple, value: float) -> Tensor:
    """Pad the (T, H, W) dimensions of x for a 'same' layer with this kernel and stride."""
    pads: list[int] = []
    # F.pad takes (W_front, W_back, H_front, H_back, T_front, T_back): last dimension first.
    for size, k, s in reversed(list(zip(x.shape[-3:], kernel, stride, strict=True))):
        pads += same_padding(size, k, s)
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


def _symmetric_same(kernel: Triple, stride: Triple) -> Triple | None:
    """The static padding equal to 'same' at every input size, or None when it depends on it.

    With stride 1 and an odd kernel, 'same' is always (k - 1) / 2 on each side, which the layer
    can do itself (no extra padded copy of the input).
    """
    if all(s == 1 and k % 2 == 1 for k, s in zip(kernel, stride, strict=True)):
        return (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
    return None


class Unit3D(nn.Module):
    """Conv3d ('same' padding, no bias) -> BatchNorm3d -> ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | Triple = 1,
        stride: int | Triple = 1,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)
        static = _symmetric_same(self.kernel, self.stride)
        self.dynamic_padding = static is None
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            self.kernel,
            stride=self.stride,
            padding=static or 0,
            bias=False,
        )
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.dynamic_padding:
            # Zero padding, as TensorFlow's 'same' convolution.
            x = _pad_same(x, self.kernel, self.stride, 0.0)
        return self.relu(self.bn(self.conv(x)))


class MaxPool3dSame(nn.Module):
    """3D max-pool with 'same' padding; padded positions never win (they are -inf)."""

    def __init__(self, kernel: int | Triple, stride: int | Triple) -> None:
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)
        static = _symmetric_same(self.kernel, self.stride)
        self.dynamic_padding = static is None
        # MaxPool3d's own padding is implicitly -inf, so the static case needs no copy.
        self.pool = nn.MaxPool3d(self.kernel, self.stride, padding=static or 0)

    def forward(self, x: Tensor) -> Tensor:
        if self.dynamic_padding:
            x = _pad_same(x, self.kernel, self.stride, float("-inf"))
        return self.pool(x)


class InceptionModule(nn.Module):
    """Four parallel branches concatenated along channels (see the module docstring)."""

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        c1, c2_reduce, c2, c3_reduce, c3, c4 = channels
        self.branch_1x1 = Unit3D(in_channels, c1)
        self.branch_3x3 = nn.Sequential(
            Unit3D(in_channels, c2_reduce), Unit3D(c2_reduce, c2, kernel=3)
        )
        self.branch_3x3b = nn.Sequential(
            Unit3D(in_channels, c3_reduce), Unit3D(c3_reduce, c3, kernel=3)
        )
        self.branch_pool = nn.Sequential(MaxPool3dSame(3, 1), Unit3D(in_channels, c4))
        self.out_channels = c1 + c2 + c3 + c4

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.branch_1x1(x), self.branch_3x3(x), self.branch_3x3b(x), self.branch_pool(x)],
            dim=1,
        )


class I3D(nn.Module):
    """Inflated Inception-v1 up to Mixed_5c; returns (B, 1024, T', H', W').

    T' = ceil(T / 8), H' = ceil(H / 32) (each strided layer rounds up).

    Args:
        in_channels: channels of the input clip (3 for RGB).
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["Conv3d_1a_7x7"] = Unit3D(in_channels, 64, kernel=7, stride=2)
        layers["MaxPool3d_2a_3x3"] = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        layers["Conv3d_2b_1x1"] = Unit3D(64, 64)
        layers["Conv3d_2c_3x3"] = Unit3D(64, 192, kernel=3)
        layers["MaxPool3d_3a_3x3"] = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192
        pools_before = {"Mixed_4b": ("MaxPool3d_4a_3x3", 3), "Mixed_5b": ("MaxPool3d_5a_2x2", 2)}
        for name, config in INCEPTION_CHANNELS.items():
            if name in pools_before:
                pool_name, kernel = pools_before[name]
                layers[pool_name] = MaxPool3dSame(kernel, 2)
            module = InceptionModule(channels, config)
            layers[name] = module
            channels = module.out_channels
        self.features = nn.Sequential(layers)
        self.feature_dim: int = channels

    def forward(self, clips: Tensor) -> Tensor:
        """(B, C, T, H, W) clips -> (B, 1024, T', H', W') Mixed_5c feature map."""
        return self.features(clips)
