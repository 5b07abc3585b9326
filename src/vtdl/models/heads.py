"""Heads on top of a backbone's feature map, and the classifier used for fine-tuning.

Every backbone returns its last feature map (B, D, T', H', W'); a head turns it into what a stage
needs: the pretraining embedding (`ProjectionHead`), class logits (`ClassifierHead`), or the
pooled features of the linear probe and retrieval (`BackboneWithHead.features`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vtdl.errors import VtdlError
from vtdl.models.init import INIT_MODES, init_original

HEAD_KINDS = ("linear", "i3d")


def global_average_pool(features: Tensor) -> Tensor:
    """(B, D, T', H', W') feature map -> (B, D) mean over all positions; (B, D) is returned as is.

    The mean is taken in float32: under autocast the map is bf16/fp16, and a sum over thousands
    of positions in half precision loses digits.
    """
    if features.dim() == 2:
        return features
    return features.float().flatten(2).mean(dim=2)


class ProjectionHead(nn.Module):
    """The pretraining head: global average pool -> Linear(feature_dim -> dim) -> L2 normalise.

    Args:
        feature_dim: channels D of the backbone's feature map.
        dim: embedding size (default 128, as in the original).
    """

    def __init__(self, feature_dim: int, dim: int = 128) -> None:
        super().__init__()
        self.fc = nn.Linear(feature_dim, dim)

    def forward(self, features: Tensor) -> Tensor:
        """(B, D, T', H', W') map (or pooled (B, D)) -> (B, dim) float32 unit vectors."""
        embedding = self.fc(global_average_pool(features))
        # Normalise in float32: under autocast the linear layer returns bf16/fp16.
        return F.normalize(embedding.float(), dim=1)


class ClassifierHead(nn.Module):
    """Class logits from a feature map.

    kind="linear": global average pool -> dropout -> Linear(feature_dim -> num_classes).
    kind="i3d": the I3D classifier of the original: average pool over space (adaptive, so any
    input size works; the original's fixed 2x7x7 window also averages pairs of time steps, which
    only re-weights the first and last step in the final mean) -> dropout -> 1x1x1 Conv3d to
    logits -> mean over time.

    Args:
        feature_dim: channels D of the backbone's feature map.
        num_classes: number of classes.
        dropout: dropout probability before the last layer (default 0.5, as in the original).
        kind: "linear" or "i3d".
    """

    def __init__(
        self, feature_dim: int, num_classes: int, dropout: float = 0.5, kind: str = "linear"
    ) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise VtdlError(f"classifier head: unknown kind {kind!r}; choose one of {HEAD_KINDS}")
        if not 0.0 <= dropout < 1.0:
            raise VtdlError(f"classifier head: dropout must be in [0, 1), got {dropout}")
        if num_classes < 1:
            raise VtdlError(f"classifier head: num_classes must be at least 1, got {num_classes}")
        self.kind = kind
        self.dropout = nn.Dropout(dropout)
        if kind == "linear":
            self.fc = nn.Linear(feature_dim, num_classes)
        else:
            self.logits = nn.Conv3d(feature_dim, num_classes, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        """(B, D, T', H', W') feature map -> (B, num_classes) logits."""
        if self.kind == "linear":
            return self.fc(self.dropout(global_average_pool(features)))
        per_step = F.adaptive_avg_pool3d(features, (features.shape[2], 1, 1))
        per_step = self.logits(self.dropout(per_step))  # (B, num_classes, T', 1, 1)
        return per_step.flatten(2).mean(dim=2)


def build_classifier_head(
    backbone_name: str,
    feature_dim: int,
    num_classes: int,
    dropout: float = 0.5,
    *,
    init: str = "original",
) -> ClassifierHead:
    """The fine-tuning classifier for a backbone: the I3D head for `i3d`, linear for the rest.

    Args:
        backbone_name: a name of `vtdl.models.BACKBONES`.
        feature_dim: channels of the backbone's feature map (`backbone.feature_dim`).
        num_classes: number of classes.
        dropout: dropout probability (default 0.5).
        init: "original" applies `init_original` to the head, as the original initialises the
            whole model (it changes the I3D head's 1x1x1 conv; linear layers keep PyTorch's
            default); "default" keeps PyTorch's default initialisation.

    Raises:
        VtdlError: unknown backbone name or init mode.
    """
    from vtdl.models import BACKBONES  # the registry imports this module

    if backbone_name not in BACKBONES:
        raise VtdlError(f"unknown backbone {backbone_name!r}; choose one of {', '.join(BACKBONES)}")
    if init not in INIT_MODES:
        raise VtdlError(f"classifier head: unknown init {init!r}; choose one of {INIT_MODES}")
    kind = "i3d" if backbone_name == "i3d" else "linear"
    head = ClassifierHead(feature_dim, num_classes, dropout=dropout, kind=kind)
    if init == "original":
        init_original(head)
    return head


class BackboneWithHead(nn.Module):
    """A backbone and a head: clips (B, C, T, H, W) -> head output.

    With a `ClassifierHead` it is the fine-tuning (and supervised reference) classifier, with a
    `ProjectionHead` a pretraining encoder (`TemporalMoCo.encoder_q`). `features(clips)` gives the
    pooled (B, D) backbone features (float32) that the linear probe and retrieval use; the head
    is not involved.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, clips: Tensor) -> Tensor:
        """(B, C, T, H, W) clips -> (B, num_classes) logits."""
        return self.head(self.backbone(clips))

    def features(self, clips: Tensor) -> Tensor:
        """(B, C, T, H, W) clips -> (B, D) globally averaged backbone features, float32."""
        return global_average_pool(self.backbone(clips))
