"""What pretraining and fine-tuning share around their steps: one scaffold, two loops.

`TrainState` is the part of a training job a checkpoint holds (model, optimiser, grad scaler,
epoch, random generators, MLflow run id) and knows how to save, resume and set each epoch's
learning rate from its `Recipe`; `add_stage_arguments` (the command-line options every torch
stage takes) and `set_up_process` (what each does first) are shared too. The steps themselves
differ (triplets and a pretext model vs labelled clips and a classifier) and stay in
`vtdl.pretrain` and `vtdl.downstream.finetune`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vtdl.checkpoint import load_resumable, rng_state, save_checkpoint, set_rng_state
from vtdl.config import add_settings_argument
from vtdl.runtime import add_resource_arguments, keep_freed_memory, set_lr
from vtdl.settings import Recipe

# The keys `TrainState.state_dict` writes itself; any other key of a checkpoint is a stage fact.
_OWN_KEYS = frozenset(
    {"params_digest", "epoch", "model", "optimizer", "grad_scaler", "rng", "mlflow_run_id"}
)


@dataclass
class TrainState:
    """A training job's resumable state.

    Every random draw of a job is a function of its seed and position (`vtdl.seeds`), so this
    plus the global generators' state is all a resumed job needs to end bit-equal, on the CPU,
    to an uninterrupted one.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    recipe: Recipe
    epoch: int = 0
    run_id: str | None = None  # the MLflow run a resumed job continues
    # What the stage added to the checkpoint it resumed from (`state_dict`'s `extra`).
    facts: dict[str, Any] = field(default_factory=dict)

    def start_epoch(self) -> float:
        """Set and return the learning rate of the epoch about to run."""
        lr = self.recipe.lr_at(self.epoch)
        set_lr(self.optimizer, lr)
        return lr

    def state_dict(self, digest: str, **extra: Any) -> dict[str, Any]:
        """The checkpoint: `digest` names the job (its parameters), `extra` adds stage facts."""
        return {
            "params_digest": digest,
            "epoch": self.epoch,
            **extra,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "rng": rng_state(),  # CPU and CUDA generators (dropout)
            "mlflow_run_id": self.run_id or "",
        }

    def save_if_due(self, path: Path, digest: str, **extra: Any) -> bool:
        """Write the checkpoint when the recipe says one is due after this epoch."""
        if not self.recipe.checkpoint_due(self.epoch):
            return False
        save_checkpoint(path, self.state_dict(digest, **extra))
        return True

    def resume(self, path: Path, digest: str) -> bool:
        """Continue from `path` if it holds this job (same digest); False when it does not."""
        state = load_resumable(path, digest)
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["grad_scaler"])
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.run_id = state["mlflow_run_id"] or None
        self.facts = {k: v for k, v in state.items() if k not in _OWN_KEYS}
        return True


def add_stage_arguments(parser: argparse.ArgumentParser, section: str) -> None:
    """`--settings` (the params section) and `--threads`/`--gpus`: every torch stage's options."""
    add_settings_argument(parser, section)
    add_resource_arguments(parser)


def set_up_process(args: argparse.Namespace) -> None:
    """What every torch stage does first: apply `--threads` (0 leaves torch's own choice) and
    let malloc keep the clip-sized blocks it frees (`runtime.keep_freed_memory`)."""
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
