"""`c3d`: C3D (Tran et al., ICCV 2015), convolutional part only.

Eight 3x3x3 convolutions (stride 1, padding 1) and five max-pools:

    conv1a 64   pool1 1x2x2
    conv2a 128  pool2 2x2x2
    conv3a 256  conv3b 256  pool3 2x2x2
    conv4a 512  conv4b 512  pool4 2x2x2
    conv5a 512  conv5b 512  [pool5 2x2x2]

Differences from the paper's network, and why:
- fc6/fc7/fc8 are dropped. fc6 flattens a fixed 512x1x4x4 pool5 map, so it ties the network to
  16x112x112 clips; the backbone returns the conv5b map instead (or pool5's with `pool5=True`)
  and the heads pool it globally, so any clip size works (the VTDL original does the same: it
  replaces pool5 and the fc layers by a global average pool).
- Batch norm after every conv (default `batch_norm=True`, as the VTDL original's C3D): training
  the plain network from scratch with random init is unstable. With batch norm the convs have no
  bias (the norm removes any constant); `batch_norm=False` gives the paper's conv + bias + ReLU.
- The pools round up (ceil mode, as Caffe, where C3D was written), so short clips still work:
  with 8 frames pool4 sees one frame and keeps it instead of failing.
At 16x112x112 the output is (512, 2, 7, 7) (pool5: (512, 1, 4, 4)); at 64x224x224,
(512, 8, 14, 14).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

# (name, output channels, pool after it: kernel = stride, or None).
C3D_LAYERS: tuple[tuple[str, int, tuple[int, int, int] | None], ...] = (
    ("conv1a", 64, (1, 2, 2)),
    ("conv2a", 128, (2, 2, 2)),
    ("conv3a", 256, None),
    ("conv3b", 256, (2, 2, 2)),
    ("conv4a", 512, None),
    ("conv4b", 512, (2, 2, 2)),
    ("conv5a", 512, None),
    ("conv5b", 512, (2, 2, 2)),
)


class C3D(nn.Module):
    """C3D conv1a ... conv5b (optionally pool5); returns (B, 512, T', H', W').

    Args:
        in_channels: channels of the input clip (3 for RGB).
        batch_norm: add BatchNorm3d after every conv (default True; False is the paper's net).
        pool5: end with the paper's pool5 (2x2x2 max-pool) instead of the conv5b map.
    """

    def __init__(self, in_channels: int = 3, batch_norm: bool = True, pool5: bool = False) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        previous = in_channels
        for index, (name, out, pool) in enumerate(C3D_LAYERS):
            layers[name] = nn.Conv3d(previous, out, kernel_size=3, padding=1, bias=not batch_norm)
            if batch_norm:
                layers[f"bn{name[4:]}"] = nn.BatchNorm3d(out)
            layers[f"relu{name[4:]}"] = nn.ReLU(inplace=True)
            is_last = index == len(C3D_LAYERS) - 1
            if pool is not None and (pool5 or not is_last):
                layers[f"pool{name[4]}"] = nn.MaxPool3d(pool, stride=pool, ceil_mode=True)
            previous = out
        self.features = nn.Sequential(layers)
        self.feature_dim: int = previous

    def forward(self, clips: Tensor) -> Tensor:
        """(B, C, T, H, W) clips -> (B, 512, T', H', W') conv5b (or pool5) feature map."""
        return self.features(clips)
