"""Typed settings: each training stage turns its validated params section into one frozen object.

The schema (params.schema.yaml) says which keys exist and which values they may take; these
classes say how the code reads them: `settings.batch_size`, not `settings["batch_size"]`, so a
misspelt key fails where the object is built (and in the type checker), not when the line that
reads it first runs. `tests/test_settings.py` keeps each class's fields equal to its schema
section's keys, so a key added to one and not the other fails a test.

A stage builds its object once, from the section `vtdl.config.load_settings` validated, with
`from_section`; `as_dict()` gives the section back (lists as lists) for what logs or hashes the
settings (MLflow parameters, params digests, cached-feature metadata).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vtdl.errors import VtdlError

T = TypeVar("T", bound="Section")


@dataclass(frozen=True)
class Section:
    """A params section as an object: one field per key."""

    @classmethod
    def from_section(cls: type[T], section: Mapping[str, Any]) -> T:
        """The object of a validated section; an unknown key is an error naming it (the schema
        refuses those before, so this only catches a schema and a class that disagree)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - names)
        if unknown:
            raise VtdlError(f"{cls.__name__}: unknown settings {', '.join(unknown)}")
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in section
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise VtdlError(f"{cls.__name__}: missing settings {', '.join(missing)}")
        return cls(**{key: _nested(cls, key, value) for key, value in section.items()})

    @classmethod
    def of(cls: type[T], settings: T | Mapping[str, Any]) -> T:
        """`settings` as this class: the object itself, or one built from a section mapping
        (what a Python caller of a stage, a test or a benchmark, may hand over)."""
        return settings if isinstance(settings, cls) else cls.from_section(settings)

    def as_dict(self) -> dict[str, Any]:
        """The section as params.yaml spells it (nested sections as mappings), less the keys
        a job's view leaves out (None: `PretrainSettings.for_job`, a features job's
        `DownstreamSettings`)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)


def _nested(cls: type, key: str, value: Any) -> Any:
    """A nested section (downstream.finetune, downstream.linear) as its own object."""
    kind = _NESTED.get((cls.__name__, key))
    return kind.from_section(value) if kind is not None and isinstance(value, Mapping) else value


@dataclass(frozen=True)
class Recipe(Section):
    """The optimiser and learning-rate schedule of a training stage.

    Shared by pretraining and fine-tuning: both read these keys and nothing else decides their
    learning rates or optimiser.
    """

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    lr_schedule: str
    milestones: list[int]
    lr_gamma: float
    warmup_epochs: int
    epochs: int
    checkpoint_every: int

    def lr_at(self, epoch: int) -> float:
        """The learning rate of an epoch, a pure function of it: nothing to checkpoint.

        `multistep` (x lr_gamma at each milestone epoch: the paper's 120/160/200), `cosine`
        (to zero at `epochs`) or `constant`; a linear warm-up over `warmup_epochs` first.
        """
        if self.warmup_epochs and epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / self.warmup_epochs
        if self.lr_schedule == "multistep":
            return self.lr * self.lr_gamma ** sum(epoch >= m for m in self.milestones)
        if self.lr_schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * epoch / max(1, self.epochs)))
        if self.lr_schedule == "constant":
            return self.lr
        raise VtdlError(
            f"lr_schedule: unknown schedule {self.lr_schedule!r} (multistep, cosine, constant)"
        )

    def checkpoint_due(self, epochs_done: int) -> bool:
        """A checkpoint is written every `checkpoint_every` epochs and after the last."""
        return epochs_done % self.checkpoint_every == 0 or epochs_done == self.epochs

    def build_optimizer(self, params: Iterable) -> Any:
        """SGD (the paper's, with `momentum`) or Adam; `params` may be parameter groups
        carrying an "lr_scale" (the learning rate of each epoch is set by `set_lr`)."""
        import torch  # settings are read by stages that never train, too

        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


# The keys of `pretrain` that choose which jobs run, not how one job trains.
PRETRAIN_GRID = ("methods", "backbones", "seeds")


@dataclass(frozen=True)
class PretrainSettings(Recipe):
    """The `pretrain` section (params.yaml; every key described in the schema).

    A job (one method x backbone x seed) sees it through `for_job`: without the grid lists and
    with only its own backbone's options. Its parameters, its resume identity and its MLflow
    run then stay the same when a seed, a method or another backbone joins the grid.
    """

    dataset: str
    split: int
    clip_len: int
    stride: int
    crop_size: int
    resize_short: int
    rotation: float
    color_jitter: list[float]
    faithful_jitter: bool
    sampler: str
    negative: str
    min_gap: int
    tca_alpha: float
    queue_size: int
    tau: float
    ema: float
    bn_splits: int
    dim: int
    batch_size: int
    grad_accum: int
    num_workers: int
    device: str
    amp: str
    channels_last: bool
    augment_on: str = "auto"
    backbone_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: list[str] | None = None
    backbones: list[str] | None = None
    seeds: list[int] | None = None

    def options_of(self, backbone: str) -> dict[str, Any]:
        """The constructor options params.yaml gives this backbone (`backbone_options`)."""
        return dict(self.backbone_options.get(backbone, {}))

    def for_job(self, backbone: str) -> PretrainSettings:
        """The settings one job of `backbone` trains with (see the class)."""
        options = self.backbone_options
        mine = {backbone: options[backbone]} if backbone in options else {}
        return self.replace(**dict.fromkeys(PRETRAIN_GRID), backbone_options=mine)


@dataclass(frozen=True)
class FinetuneSettings(Recipe):
    """`downstream.finetune`: the fine-tuning recipe (`preset` resolved by vtdl finetune)."""

    preset: str
    backbone_lr_scale: float
    dropout: float


@dataclass(frozen=True)
class LinearSettings(Section):
    """`downstream.linear`: the linear probe on cached features."""

    weight_decay: float
    max_iter: int


@dataclass(frozen=True)
class DownstreamSettings(Section):
    """The `downstream` section as one protocol's job sees it.

    A job is handed only what its protocol uses (`vtdl.downstream.job.resolve_settings`): a
    features job gets the clip and run keys alone, so the training keys are None there, and
    only fine-tuning has `finetune`, only the linear probe `linear`.
    """

    clip_len: int
    stride: int
    crop_size: int
    resize_short: int
    test_clips: int
    eval_batch_size: int
    num_workers: int
    device: str
    amp: str
    channels_last: bool
    labels_per_class: int | None = None
    rotation: float | None = None
    color_jitter: list[float] | None = None
    batch_size: int | None = None
    datasets: list[str] | None = None
    splits: list[int] | None = None
    finetune: FinetuneSettings | None = None
    linear: LinearSettings | None = None


_NESTED: dict[tuple[str, str], type[Section]] = {
    ("DownstreamSettings", "finetune"): FinetuneSettings,
    ("DownstreamSettings", "linear"): LinearSettings,
}
