"""`r3d_18`, `r2plus1d_18`, `mc3_18`: torchvision's video ResNets without their classifier.

The networks come from `torchvision.models.video` with `weights=None` (trained from scratch;
nothing is downloaded). Their global average pool and fc layer are removed so the backbone
returns the layer4 feature map (B, 512, T', H', W'), like every other backbone here; the heads
in `vtdl.models.heads` pool and classify. The sub-module names (stem, layer1 ... layer4) and so
the state-dict keys are torchvision's, minus `fc.*`.

At 16x112x112 all three output (512, 2, 7, 7); at 64x224x224 (512, 8, 14, 14).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

# torchvision is imported by the builders, not here: importing it costs about 1.5 s of CPU,
# which every job that only uses small3d (the embedded default) would pay for nothing.


class VideoResNetBackbone(nn.Module):
    """A torchvision VideoResNet up to layer4 (no avgpool, no fc)."""

    def __init__(self, builder: Callable[..., nn.Module]) -> None:
        super().__init__()
        network = builder(weights=None)
        self.stem = network.stem
        self.layer1 = network.layer1
        self.layer2 = network.layer2
        self.layer3 = network.layer3
        self.layer4 = network.layer4
        self.feature_dim: int = network.fc.in_features

    def forward(self, clips: Tensor) -> Tensor:
        """(B, 3, T, H, W) clips -> (B, 512, T', H', W') layer4 feature map."""
        x = self.stem(clips)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def r3d_18() -> VideoResNetBackbone:
    """ResNet-18 with full 3x3x3 convolutions (Tran et al. 2018), 33.2M parameters."""
    from torchvision.models import video

    return VideoResNetBackbone(video.r3d_18)


def r2plus1d_18() -> VideoResNetBackbone:
    """R(2+1)D-18: each 3x3x3 conv factored into 1x3x3 then 3x1x1, 31.3M parameters."""
    from torchvision.models import video

    return VideoResNetBackbone(video.r2plus1d_18)


def mc3_18() -> VideoResNetBackbone:
    """MC3-18: 3D convolutions in layer1, 2D (1x3x3) in layers 2-4, 11.5M parameters."""
    from torchvision.models import video

    return VideoResNetBackbone(video.mc3_18)
