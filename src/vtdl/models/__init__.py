"""Video backbones (all trained from scratch) and the heads that sit on them.

Every backbone takes clips (B, C, T, H, W), returns its LAST FEATURE MAP (B, D, T', H', W')
(not pooled, not classified) and has an attribute `feature_dim` = D:

    small3d      4-layer 3D CNN for CPU (the embedded data set's default), D = 128, 292k params
    i3d          Inflated Inception-v1 (the paper's default), D = 1024, 12.3M params
    r3d_18       torchvision ResNet-18 3D, D = 512, 33.2M params
    r2plus1d_18  torchvision R(2+1)D-18, D = 512, 31.3M params
    mc3_18       torchvision mixed-convolution ResNet-18, D = 512, 11.5M params
    c3d          C3D convolutions (+ batch norm), D = 512, 27.7M params

`build_backbone(name, **options)` builds one and, by default, applies the original's weight
initialisation (`init_original`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from vtdl.errors import VtdlError
from vtdl.models.c3d import C3D
from vtdl.models.heads import (
    BackboneWithHead,
    ClassifierHead,
    ProjectionHead,
    build_classifier_head,
    global_average_pool,
)
from vtdl.models.i3d import I3D
from vtdl.models.init import INIT_MODES, init_original
from vtdl.models.small import Small3D
from vtdl.models.torchvision_video import mc3_18, r2plus1d_18, r3d_18

# Name -> constructor; the keyword arguments of each constructor are the backbone's options.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "small3d": Small3D,
    "i3d": I3D,
    "r3d_18": r3d_18,
    "r2plus1d_18": r2plus1d_18,
    "mc3_18": mc3_18,
    "c3d": C3D,
}


def build_backbone(name: str, init: str = "original", **options: object) -> nn.Module:
    """Build backbone `name` from scratch.

    Args:
        name: one of `BACKBONES`.
        init: "original" (default): `init_original` (conv Xavier-uniform gain sqrt(2), batch-norm
            weight ~ N(1, 0.02), biases 0); "default": the layers' own PyTorch/torchvision init.
        **options: the backbone's constructor options (e.g. small3d's `channels`, `width`).

    Returns:
        The module; it maps (B, C, T, H, W) to (B, feature_dim, T', H', W').

    Raises:
        VtdlError: unknown name, init mode or option (the message lists the valid ones).
    """
    if name not in BACKBONES:
        raise VtdlError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if init not in INIT_MODES:
        raise VtdlError(f"backbone {name!r}: unknown init {init!r}; choose one of {INIT_MODES}")
    constructor = BACKBONES[name]
    valid = list(inspect.signature(constructor).parameters)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise VtdlError(
            f"backbone {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(valid) if valid else 'none'}"
        )
    backbone = constructor(**options)
    if init == "original":
        init_original(backbone)
    return backbone


__all__ = [
    "BACKBONES",
    "C3D",
    "I3D",
    "INIT_MODES",
    "ClassifierHead",
    "ProjectionHead",
    "Small3D",
    "BackboneWithHead",
    "build_backbone",
    "build_classifier_head",
    "global_average_pool",
    "init_original",
]
