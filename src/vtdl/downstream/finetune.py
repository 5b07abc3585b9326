"""`vtdl finetune`: train encoder + classifier on a labelled subset, test with 1 and N clips.

Protocol (docs/method.md §7, without the original's defects):
- the model is the encoder (or a scratch backbone) plus `build_classifier_head` (I3D's head
  for i3d, global pool + dropout + linear otherwise), trained on `labels_per_class` videos
  per class of the split's training list, one random augmented clip per video and epoch;
- the model after the LAST epoch is tested: nothing is selected on the test split;
- test: video-level top1/top5/mean-class accuracy with the centre clip and with
  `test_clips` uniformly spaced centre-cropped clips (softmax averaged).

Optimiser (`downstream.finetune`): Adam (default) or SGD, with the encoder's learning rate
scaled by `backbone_lr_scale`, and the schedule of `vtdl.settings.Recipe.lr_at`.
`preset: original` replaces all of that by the original's recipe: SGD momentum 0.9, no weight
decay, lr 1e-3 (hmdb51) or 5e-4 (ucf101), x0.3 at epochs 10/20/25/30/35/40, 45 epochs, one
learning rate for all layers.

Resume: a checkpoint next to the output (`<out stem>.ckpt`) is written every
`checkpoint_every` epochs with model, optimiser, grad scaler, epoch, RNG state and the MLflow
run id; a job re-started with the same parameters (same digest) continues from it and ends
with the same weights as an uninterrupted run, because each epoch's randomness (order, clips,
augmentation, dropout) is seeded from (seed, epoch) alone. The checkpoint is removed once the
result is written: it exists to survive a kill, not to cache a finished job.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vtdl import distributed, tracking
from vtdl.checkpoint import save_checkpoint
from vtdl.downstream import common, evaluate
from vtdl.errors import VtdlError
from vtdl.models import BackboneWithHead, build_classifier_head
from vtdl.progress import progress
from vtdl.seeds import FINETUNE_EPOCH, derive, seed_everything, torch_generator
from vtdl.settings import FinetuneSettings
from vtdl.training import TrainState

PROTOCOL = "finetune"

# The original's fine-tuning recipe (docs/method.md §7), by data set format.
ORIGINAL_LR = {"hmdb51": 1e-3, "ucf101": 5e-4}
ORIGINAL_RECIPE = {
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "backbone_lr_scale": 1.0,
    "lr_schedule": "multistep",
    "milestones": [10, 20, 25, 30, 35, 40],
    "lr_gamma": 0.3,
    "warmup_epochs": 0,
    "epochs": 45,
}


def resolve_recipe(finetune: FinetuneSettings, data_format: str | None) -> FinetuneSettings:
    """The `downstream.finetune` settings with a preset applied (`preset: none` changes nothing)."""
    preset = finetune.preset
    if preset == "none":
        return finetune
    if preset == "original":
        if data_format not in ORIGINAL_LR:
            raise VtdlError(
                f"downstream.finetune.preset: 'original' sets the learning rate by data set "
                f"format ({', '.join(ORIGINAL_LR)}); give --format (got {data_format!r})"
            )
        return finetune.replace(**ORIGINAL_RECIPE, lr=ORIGINAL_LR[data_format])
    raise VtdlError(f"downstream.finetune.preset: unknown preset {preset!r} (none, original)")


class _Trainer:
    """Model, optimiser and the state a checkpoint needs (`train_state`)."""

    def __init__(self, job: common.Job, recipe: FinetuneSettings, place: distributed.Place) -> None:
        self.job, self.recipe, self.place = job, recipe, place
        seed_everything(job.seed)  # the head's initialisation
        head = build_classifier_head(
            job.backbone_name, job.backbone.feature_dim, job.num_classes, recipe.dropout
        )
        self.model = job.runtime.place(BackboneWithHead(job.backbone, head))
        # The model or, under torchrun, its DistributedDataParallel wrapper (vtdl.distributed).
        self.step_model = distributed.wrap(self.model, job.runtime.device)
        self.share = distributed.per_rank_batch(
            job.settings.batch_size, place.world_size, "downstream.batch_size"
        )
        groups = [
            {"params": list(job.backbone.parameters()), "lr_scale": recipe.backbone_lr_scale},
            {"params": list(head.parameters()), "lr_scale": 1.0},
        ]
        self.train_state = TrainState(
            self.model, recipe.build_optimizer(groups), job.runtime.grad_scaler(), recipe
        )
        self.indices = job.labelled_indices()
        self.dataset = job.train_dataset(self.indices)


def train_one_epoch(trainer: _Trainer) -> dict[str, float]:
    """One pass over the labelled subset; returns mean train loss and top-1 of the epoch."""
    job, state = trainer.job, trainer.train_state
    epoch = state.epoch
    lr = state.start_epoch()
    # Clips, augmentation (num_workers=0) and dropout of this epoch; each rank its own stream.
    torch.manual_seed(derive(job.seed, FINETUNE_EPOCH, epoch, trainer.place.rank))
    workers = job.settings.num_workers
    # The order (the same on every rank) and the workers' seeds.
    order = torch_generator(job.seed, FINETUNE_EPOCH, epoch)
    if trainer.place.is_distributed:  # this rank's share of each global batch
        shares = distributed.share_of_batches(
            torch.randperm(len(trainer.dataset), generator=order).tolist(),
            job.settings.batch_size,
            trainer.place.rank,
            trainer.place.world_size,
        )
        batching: dict[str, Any] = {"sampler": shares, "batch_size": trainer.share}
    else:
        batching = {"shuffle": True, "generator": order, "batch_size": trainer.share}
    loader = DataLoader(
        trainer.dataset,
        num_workers=workers,
        pin_memory=job.runtime.device.type == "cuda",
        **batching,
    )
    trainer.model.train()
    loss_sum = correct = seen = 0.0
    desc = f"finetune {job.method} epoch {epoch + 1}/{trainer.recipe.epochs}"
    for batch in progress(loader, desc, total=len(loader), unit="batch"):
        clips = job.runtime.to_device(batch["video"])
        labels = batch["label"].to(job.runtime.device)
        with job.runtime.autocast():
            logits = trainer.step_model(clips)
        loss = F.cross_entropy(logits.float(), labels)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        n = len(labels)
        loss_sum += float(loss.detach()) * n
        correct += float((logits.argmax(dim=1) == labels).sum())
        seen += n
    state.epoch += 1
    # Every rank saw as many clips: the global means are the means of the ranks' means.
    means = {"train_loss": loss_sum / seen, "train_top1": correct / seen}
    return {**distributed.mean_over_ranks(means, job.runtime.device), "lr": lr}


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.stem + ".ckpt")


def finetune(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) one fine-tuning job; returns the result written to `--out`.

    Under torchrun every rank trains on its share of each batch; rank 0 alone logs, tests
    and writes (the other ranks return an empty result).
    """
    try:
        return _finetune(args)
    finally:
        distributed.shutdown()


def _finetune(args: argparse.Namespace) -> dict[str, Any]:
    job = common.prepare_job(args, PROTOCOL)
    place, device = distributed.init(job.runtime.device)
    job.runtime = dataclasses.replace(job.runtime, device=device)
    say = place.say
    recipe = resolve_recipe(job.settings.finetune, args.format)
    job.settings = job.settings.replace(finetune=recipe)
    trainer = _Trainer(job, recipe, place)
    job.extra_params = {"num_train_videos": len(trainer.indices)}
    params = job.params()
    digest = tracking.params_digest(params)
    ckpt = checkpoint_path(job.out)
    state = trainer.train_state
    if state.resume(ckpt, digest):
        say(f"resuming from {ckpt} at epoch {state.epoch}", flush=True)
    epochs = recipe.epochs
    with job.start_run(
        params, resume_run_id=state.run_id, system_metrics=True, enabled=place.is_main
    ) as run:
        state.run_id = run.run_id or state.run_id
        job.log_inputs(run, str(job.train_list), str(job.test_list))
        ranks = f" on {place.world_size} ranks" if place.is_distributed else ""
        say(
            f"{job.run_name()}: {len(trainer.indices)} labelled videos of "
            f"{len(job.train_entries)}, {job.num_classes} classes, {epochs} epochs, device "
            f"{job.runtime.device}{ranks}; MLflow run {run.run_id}",
            flush=True,
        )
        while state.epoch < epochs:
            means = train_one_epoch(trainer)
            run.log_metrics({f"{job.prefix}/{k}": v for k, v in means.items()}, step=state.epoch)
            say(
                f"epoch {state.epoch}/{epochs}: loss {means['train_loss']:.4f} "
                f"top1 {means['train_top1']:.3f} lr {means['lr']:.3g}",
                flush=True,
            )
            if place.is_main and state.save_if_due(ckpt, digest):
                run.flush()
        if not place.is_main:
            return {}
        trainer.model.eval()
        metrics, confusion = evaluate.classification_report(trainer.model, job)
        common.log_confusion(run, job, confusion)
        if args.save_model:
            save_checkpoint(
                args.save_model,
                {
                    "backbone": job.backbone_name,
                    "classes": job.classes,
                    "model": {k: v.cpu() for k, v in trainer.model.state_dict().items()},
                    "mlflow_run_id": run.run_id,
                },
            )
        result = common.finish(run, job, metrics, step=epochs)
    ckpt.unlink(missing_ok=True)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_arguments(parser)
    parser.add_argument(
        "--format",
        choices=("ucf101", "hmdb51", "kinetics"),
        help="the data set's format (picks the learning rate of `preset: original`)",
    )
    parser.add_argument("--save-model", help="also write the fine-tuned model to this file")


def run(args: argparse.Namespace) -> None:
    result = finetune(args)
    if result:  # rank 0 (the only one under torchrun that writes)
        print(json.dumps(result, indent=2, sort_keys=True))
