"""Temporal discriminative pretraining: MoCo with one temporal negative (docs/method.md §4-5).

A query encoder (backbone + projection head) embeds the anchor clip; a momentum (EMA) copy of
it embeds the positive (the same frames under another spatial augmentation); the query encoder
also embeds the temporal negative (the same video at another time), with gradient. The InfoNCE
loss asks the anchor to pick its positive out of the queue of earlier keys and the negative.

Temporal Consistent Augmentation is not applied here: the training loop applies
`vtdl.augment.temporal_consistent_augmentation` to the anchor batch when the method's entry in
`vtdl.names.METHODS` has `tca`.

Every model `vtdl pretrain` trains keeps one contract, so the loop has no branch per method:
`inputs` names the batch entries its forward takes (as keywords, plus `last_micro_batch`);
forward returns {"loss", "logits", "metrics"}; `backbone` is the encoder handed downstream;
`rank_checked()` names the state every data-parallel rank must hold identically, and
`check_training_set(videos, step_batch)` refuses a training set the model cannot use.
`TemporalMoCo` is the model of the self-supervised methods, `SupervisedReference` the one of
the supervised reference; `build_pretraining_model` picks by the method's kind.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtdl import distributed
from vtdl.errors import VtdlError
from vtdl.losses import pretext_metrics, temporal_info_nce, triplet_margin
from vtdl.models import build_backbone
from vtdl.models.heads import BackboneWithHead, ProjectionHead, build_classifier_head
from vtdl.names import METHODS, REFERENCE, SELF_SUPERVISED_METHODS, Method
from vtdl.settings import PretrainSettings


def method_spec(name: str, key: str = "pretrain.method") -> Method:
    """The registry entry of self-supervised method `name`; VtdlError naming `key` if unknown."""
    if name not in SELF_SUPERVISED_METHODS:
        choices = ", ".join(SELF_SUPERVISED_METHODS)
        raise VtdlError(f"{key}: unknown method {name!r}; choose one of {choices}")
    return METHODS[name]


def validate_queue_size(
    queue_size: int, num_train_videos: int, batch_size: int, key: str = "pretrain.queue_size"
) -> None:
    """Reject a queue that would hold the batch's own videos as negatives.

    The queue keeps the keys of the last K clips. Once K reaches the number of other videos in
    an epoch (N - batch), it holds an earlier key of the very videos in the current batch, and
    each of them is pushed away from itself (a known MoCo pitfall on small data sets).

    Raises:
        VtdlError: naming `key`, with the numbers, when K < 1 or K >= N - batch.
    """
    if queue_size < 1:
        raise VtdlError(f"{key}: must be at least 1, got {queue_size}")
    limit = num_train_videos - batch_size
    if queue_size >= limit:
        raise VtdlError(
            f"{key}: {queue_size} must be below the number of training videos minus the batch "
            f"size ({num_train_videos} - {batch_size} = {limit}); a larger queue holds earlier "
            f"keys of the batch's own videos, so a video is counted as its own negative"
        )


class TemporalMoCo(nn.Module):
    """MoCo with a temporal negative: the pretraining model of moco, moco_td and vtdl.

    Args:
        backbone: maps (B, C, T, H, W) clips to a (B, D, T', H', W') feature map and has an
            attribute `feature_dim` = D. Its weights are the query encoder's; the key encoder
            starts as an exact copy.
        dim: embedding size of the projection head (default 128).
        queue_size: K, number of earlier keys used as negatives (default 5000, the original's
            UCF101 value; check it with `validate_queue_size`).
        momentum: m of the key encoder's EMA, f_k <- m f_k + (1 - m) f_q (default 0.999).
        tau: softmax temperature (default 0.07).
        use_negative: add the temporal negative column (default True; False gives plain MoCo).
        triplet_weight: weight of the triplet margin loss added to InfoNCE (default 0.0: the
            original computes it but does not add it; it is logged whenever a negative is used).
        triplet_margin: margin of that triplet loss (default 1.0).
        generator: random generator for the initial queue (default: torch's global one).
        bn_splits: shuffle-BN in one process (default 1: off). Each of the three batches goes
            through its encoder in `bn_splits` groups, so batch norm normalises each clip with
            the statistics of its group only, and the positives are shuffled before they are
            grouped (and unshuffled after). Without it a key shares its batch-norm statistics
            with its query, and the model can tell the current batch's keys from the queue's
            older ones by those statistics instead of by content (MoCo's "cheating" through BN;
            MoCo shuffles across GPUs, its one-GPU CIFAR demo splits the batch like this).
            Under torchrun the keys are always shuffled across the ranks instead (each rank's
            share is then grouped by `bn_splits` again); see `_key_embeddings`.

    Order of one training step (forward, then the caller's backward and optimizer step):
        1. EMA-update f_k from f_q. The original updates f_k right after the optimizer step;
           doing it at the start of the next forward (as MoCo does) gives the identical
           sequence of key encoders (the first update of a fresh model is a no-op because f_k
           is a copy of f_q) and needs nothing from the training loop.
        2. q = f_q(anchor); k = f_k(positive) without gradient; n = f_q(negative) with gradient.
        3. loss and metrics from [q.k, q.queue, q.n] / tau, against the queue of earlier keys.
        4. Enqueue k (FIFO), after the logits, so a key never serves as its own negative.
    Gradient accumulation: an optimizer step made of several micro-batches calls forward once
    per micro-batch with `last_micro_batch=False` except on the last. Step 1 then runs once,
    before the first micro-batch, every micro-batch sees the same queue, and the keys of all
    of them are enqueued together after the last, in order: k micro-batches of b clips are one
    batch of k*b clips (up to batch norm, whose statistics are per micro-batch). Steps 1 and 4
    change state only in training mode: an evaluation pass (model.eval()) leaves the queue and
    the key encoder untouched. The queue,
    its pointer and both encoders are registered, so `state_dict()` resumes a run exactly.
    """

    def __init__(
        self,
        backbone: nn.Module,
        dim: int = 128,
        queue_size: int = 5000,
        momentum: float = 0.999,
        tau: float = 0.07,
        use_negative: bool = True,
        triplet_weight: float = 0.0,
        triplet_margin: float = 1.0,
        generator: torch.Generator | None = None,
        bn_splits: int = 1,
    ) -> None:
        super().__init__()
        if bn_splits < 1:
            raise ValueError(f"bn_splits must be at least 1, got {bn_splits}")
        self.bn_splits = bn_splits
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self.momentum = momentum
        self.tau = tau
        self.use_negative = use_negative
        self.triplet_weight = triplet_weight
        self.triplet_margin = triplet_margin

        self.encoder_q = BackboneWithHead(backbone, ProjectionHead(backbone.feature_dim, dim))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param in self.encoder_k.parameters():
            param.requires_grad_(False)  # moved only by the EMA, never by the optimizer

        queue = torch.randn(queue_size, dim, generator=generator)
        self.register_buffer("queue", F.normalize(queue, dim=1))
        # Index of the oldest key, i.e. the next row to overwrite. A tensor (not an int) so it
        # is saved in checkpoints and updated on the device without a host synchronisation.
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        # Keys of the micro-batches of the current optimizer step not yet enqueued. Empty
        # between steps (and so at every checkpoint, which is taken between steps).
        self._pending_keys: list[Tensor] = []

    @property
    def backbone(self) -> nn.Module:
        """The query encoder's backbone: the weights fine-tuning and the probes start from."""
        return self.encoder_q.backbone

    @property
    def inputs(self) -> tuple[str, ...]:
        """The batch entries forward takes: the triplet, or the pair without the negative."""
        return ("anchor", "positive", "negative") if self.use_negative else ("anchor", "positive")

    def rank_checked(self) -> dict[str, Tensor]:
        """State data-parallel ranks must agree on besides the weights: the queue."""
        return {"the memory queue": self.queue}

    def check_training_set(self, num_videos: int, step_batch: int) -> None:
        """Refuse a queue that would hold the step's own videos (`validate_queue_size`)."""
        validate_queue_size(self.queue.shape[0], num_videos, step_batch)

    def train(self, mode: bool = True) -> TemporalMoCo:
        """Set the mode; in training the key encoder runs dropout-free but with batch-norm
        batch statistics, as in the original (its BN must see the same kind of statistics as
        the query encoder's, and its targets should not be noisy)."""
        super().train(mode)
        if mode:
            self.encoder_k.eval()
            for module in self.encoder_k.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.train()
        return self

    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        """f_k <- m f_k + (1 - m) f_q over the parameters; BN running statistics of f_k follow
        from its own forward passes (as in the original)."""
        key_params = list(self.encoder_k.parameters())
        query_params = [p.detach() for p in self.encoder_q.parameters()]
        # One fused kernel per op over all tensors (a backbone has hundreds), as optimizers do.
        torch._foreach_mul_(key_params, self.momentum)
        torch._foreach_add_(key_params, query_params, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def _gather_keys(self, keys: Tensor) -> Tensor:
        """Keys of the whole global batch, in rank order (identity in a single process), so
        every data-parallel rank enqueues the same keys and holds the same queue."""
        return distributed.all_gather(keys)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: Tensor) -> None:
        """Overwrite the oldest rows with `keys`, in order, wrapping around the end (FIFO)."""
        keys = self._gather_keys(keys)
        queue_size = self.queue.shape[0]
        batch = keys.shape[0]
        # A batch larger than the queue leaves only its newest K keys, as writing it row by row
        # would; skipping the rest also keeps the scatter indices unique.
        skipped = max(batch - queue_size, 0)
        rows = self.queue_ptr + skipped + torch.arange(batch - skipped, device=keys.device)
        self.queue.index_copy_(0, rows % queue_size, keys[skipped:].to(self.queue.dtype))
        self.queue_ptr.add_(batch).remainder_(queue_size)

    def _grouped(self, encoder: nn.Module, clips: Tensor) -> Tensor:
        """encoder(clips), batch norm over `bn_splits` groups of consecutive clips."""
        if self.bn_splits == 1 or not self.training:
            return encoder(clips)
        return torch.cat([encoder(group) for group in clips.chunk(self.bn_splits)])

    def _key_embeddings(self, positive: Tensor) -> Tensor:
        """k = f_k(positive), a constant target, computed so that a key's batch-norm
        statistics are not its query's (shuffle-BN). Across data-parallel ranks: the global
        batch of positives is gathered, permuted by one random order shared by all ranks, each
        rank encodes its share of the permuted batch, and the keys go back to their own rank
        and place (MoCo's shuffle across GPUs). Within one process, with `bn_splits` > 1, the
        positives are grouped in a random order instead."""
        with torch.no_grad():
            if not self.training:
                return self.encoder_k(positive)
            if distributed.active():
                return self._keys_shuffled_across_ranks(positive)
            if self.bn_splits == 1:
                return self.encoder_k(positive)
            order = torch.randperm(positive.shape[0], device=positive.device)
            shuffled = self._grouped(self.encoder_k, positive[order])
            keys = torch.empty_like(shuffled)
            keys[order] = shuffled  # back to the batch order
            return keys

    def _keys_shuffled_across_ranks(self, positive: Tensor) -> Tensor:
        share, rank = positive.shape[0], distributed.place().rank
        everyone = distributed.all_gather(positive)
        # rank 0's order, so all ranks cut the same permutation
        order = distributed.broadcast(torch.randperm(everyone.shape[0], device=positive.device))
        mine = slice(rank * share, (rank + 1) * share)
        encoded = distributed.all_gather(self._grouped(self.encoder_k, everyone[order[mine]]))
        keys = torch.empty_like(encoded)
        keys[order] = encoded  # every key back at its clip's place in the global batch
        return keys[mine]

    def forward(
        self,
        anchor: Tensor,
        positive: Tensor,
        negative: Tensor | None = None,
        last_micro_batch: bool = True,
    ) -> dict[str, Tensor | dict[str, Tensor]]:
        """One pretext step (or one micro-batch of it) on a batch of temporal triplets.

        Args:
            anchor: (B, C, T, H, W) anchor clips (TCA already applied for vtdl).
            positive: (B, C, T, H, W) the same frames under another spatial augmentation.
            negative: (B, C, T, H, W) clips of the same videos at another time; required when
                `use_negative`, must be None otherwise.
            last_micro_batch: False for every micro-batch of an accumulated optimizer step but
                the last (see the class docstring); True (the default) without accumulation.

        Returns:
            {"loss": scalar with gradient, "logits": (B, 1 + K [+ 1]) detached float32,
             "metrics": detached 0-d tensors: loss, pos_sim, queue_sim, instance_acc and, with
             the negative, neg_sim, pos_beats_neg, triplet}.
        """
        if self.use_negative != (negative is not None):
            wanted = "requires a negative" if self.use_negative else "takes no negative"
            raise ValueError(f"use_negative={self.use_negative}: forward {wanted}")
        if self.training and not self._pending_keys:  # the first micro-batch of a step
            self._momentum_update_key_encoder()

        q = self._grouped(self.encoder_q, anchor)
        k = self._key_embeddings(positive)
        # The negative goes through f_q in its own pass (not concatenated with the anchor), as
        # in the original: each pass normalises with its own batch statistics.
        n = self._grouped(self.encoder_q, negative) if negative is not None else None

        # A snapshot of the queue: autograd keeps it for the gradient of q, and the enqueue
        # below overwrites the buffer in place before backward runs.
        loss, logits = temporal_info_nce(q, k, self.queue.clone(), n, tau=self.tau)
        metrics = pretext_metrics(logits, has_negative=n is not None, tau=self.tau)
        if n is not None:
            # Build its graph only when it is part of the loss; otherwise it is a diagnostic.
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.triplet_weight != 0):
                triplet = triplet_margin(q, k, n, margin=self.triplet_margin)
            metrics["triplet"] = triplet.detach()
            if self.triplet_weight != 0:
                loss = loss + self.triplet_weight * triplet
        metrics["loss"] = loss.detach()

        if self.training:
            self._pending_keys.append(k)
            if last_micro_batch:
                self._dequeue_and_enqueue(torch.cat(self._pending_keys))
                self._pending_keys = []
        return {"loss": loss, "logits": logits.detach(), "metrics": metrics}


class SupervisedReference(BackboneWithHead):
    """The supervised reference: the backbone trained with every label of the pretraining
    list, with the classifier fine-tuning uses (`build_classifier_head`), behind the same
    contract as `TemporalMoCo` (see the module docstring). Its state dict is a classifier's:
    `backbone.*` and `head.*`."""

    inputs = ("anchor", "label")

    def forward(
        self, anchor: Tensor, label: Tensor, last_micro_batch: bool = True
    ) -> dict[str, Tensor | dict[str, Tensor]]:
        """Cross-entropy of the clips' logits against their labels.

        Returns:
            {"loss": scalar with gradient, "logits": (B, classes) detached,
             "metrics": detached 0-d tensors: loss, train_top1}.
        """
        logits = self.head(self.backbone(anchor))
        loss = F.cross_entropy(logits.float(), label)
        top1 = (logits.argmax(dim=1) == label).float().mean()
        metrics = {"loss": loss.detach(), "train_top1": top1}
        return {"loss": loss, "logits": logits.detach(), "metrics": metrics}

    def rank_checked(self) -> dict[str, Tensor]:
        return {}

    def check_training_set(self, num_videos: int, step_batch: int) -> None:
        """Any training set of at least one batch will do (the loop checks the batch)."""


def build_pretraining_model(
    method: str,
    backbone_name: str,
    settings: PretrainSettings,
    num_classes: int,
    queue_generator: torch.Generator,
) -> TemporalMoCo | SupervisedReference:
    """The model of a pretraining method (global generators seeded by the caller: they draw the
    initial weights); `queue_generator` draws TemporalMoCo's initial queue."""
    backbone = build_backbone(backbone_name, **settings.options_of(backbone_name))
    if METHODS[method].kind == REFERENCE:
        head = build_classifier_head(backbone_name, backbone.feature_dim, num_classes)
        return SupervisedReference(backbone, head)
    return TemporalMoCo(
        backbone,
        dim=settings.dim,
        queue_size=settings.queue_size,
        momentum=settings.ema,
        tau=settings.tau,
        use_negative=method_spec(method).temporal_negative,
        generator=queue_generator,
        bn_splits=settings.bn_splits,
    )
