"""Weight initialisation of the backbones (docs/method.md §4: "original init").

The original code re-initialises every network it trains from scratch with one function applied
to all sub-modules: convolutions get Xavier-uniform weights with gain sqrt(2) (the ReLU gain) and
batch-norm scales are drawn from N(1, 0.02). `init_original` does the same. The original matches
only convolution and batch-norm layers, so linear layers keep PyTorch's default initialisation
(Kaiming-uniform with a = sqrt(5), bias uniform in ±1/sqrt(fan_in)); we do the same. Unlike the
original (which leaves conv biases at their default, or in one version sets them to 0.1), every
conv and batch-norm bias is set to 0 here, so a fresh network does not start with an offset.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# ReLU gain: keeps the activation variance roughly constant through a ReLU network.
CONV_GAIN = math.sqrt(2.0)
BN_WEIGHT_STD = 0.02

INIT_MODES = ("original", "default")


@torch.no_grad()
def init_original(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Initialise `module` in place as the original does; returns it for chaining.

    - every Conv1d/2d/3d (and transposed conv): weight ~ Xavier-uniform with gain sqrt(2),
      i.e. U(-b, b) with b = sqrt(2) * sqrt(6 / (fan_in + fan_out)); bias = 0;
    - every BatchNorm with affine parameters: weight ~ N(1, 0.02), bias = 0
      (running statistics are reset to mean 0, variance 1);
    - linear layers and anything else: left as they are (PyTorch's default).

    Args:
        module: the network (all its sub-modules are visited).
        generator: optional torch.Generator, for an initialisation independent of the global seed.
    """
    for layer in module.modules():
        if isinstance(layer, nn.modules.conv._ConvNd):
            nn.init.xavier_uniform_(layer.weight, gain=CONV_GAIN, generator=generator)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            if layer.affine:
                nn.init.normal_(layer.weight, 1.0, BN_WEIGHT_STD, generator=generator)
                nn.init.zeros_(layer.bias)
            if layer.track_running_stats:
                layer.reset_running_stats()
    return module
