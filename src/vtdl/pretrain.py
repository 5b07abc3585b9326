"""`vtdl pretrain`: one pretraining job (method x backbone x data set x seed), resumable.

Methods: `moco`, `moco_td`, `vtdl` (the self-supervised rows of the docs/method.md §8 ablation, see
`vtdl.names.METHODS`) and `supervised`, the same backbone trained with every label of the
pretraining set for the same number of steps: the upper bound that shows what the downstream
probes can see.

Outputs in `--out` (results/pretrain/<dataset>/<method>_<backbone>_s<seed>/):
    checkpoint.pt  everything needed to resume exactly (written every `checkpoint_every` epochs
                   and at the end; not a Snakemake output, so a failed job keeps it)
    encoder.pt     the query encoder's backbone, handed to the downstream stages
    summary.json   the MLflow run id and the last epoch's mean pretext metrics

Determinism: every random draw is a function of the seed (the model initialisation, the
queue, each epoch's order, each item's clips and augmentation, each step's TCA), so on the
CPU a run resumed from a checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from vtdl import distributed, seeds, tracking
from vtdl.augment import (
    JITTER_OPS,
    ClipAugment,
    DeviceClipAugment,
    augment_place,
    temporal_consistent_augmentation,
)
from vtdl.checkpoint import save_checkpoint, save_encoder
from vtdl.config import load_settings
from vtdl.data.clips import read_list
from vtdl.data.triplets import EpochShuffle, TripletDataset
from vtdl.errors import VtdlError
from vtdl.fsutil import atomic_write_json, check_writable, sha256_file
from vtdl.names import METHODS, PRETRAINED_METHODS, split_list
from vtdl.pretext import build_pretraining_model
from vtdl.progress import progress
from vtdl.runtime import Runtime, select_runtime
from vtdl.settings import PRETRAIN_GRID, PretrainSettings
from vtdl.training import TrainState, add_stage_arguments, set_up_process


def build_model(
    method: str,
    backbone_name: str,
    settings: PretrainSettings | Mapping[str, Any],
    num_classes: int,
    seed: int,
) -> nn.Module:
    """The model a job trains, initialised from `seed` alone."""
    seeds.seed_everything(seed)
    settings = PretrainSettings.of(settings)
    return build_pretraining_model(
        method, backbone_name, settings, num_classes, seeds.torch_generator(seed, seeds.QUEUE)
    )


class _Job:
    """State and steps of one pretraining run."""

    def __init__(self, args: argparse.Namespace, settings: PretrainSettings) -> None:
        self.args, self.settings = args, settings
        self.method, self.backbone_name, self.seed = args.method, args.backbone, args.seed
        self.out = Path(args.out)
        runtime = select_runtime(settings.device, settings.amp, settings.channels_last)
        # Under torchrun: join the process group; each rank trains on its own device.
        self.place, device = distributed.init(runtime.device)
        self.runtime: Runtime = dataclasses.replace(runtime, device=device)
        self.list_file = list_file = split_list(args.lists, settings.split, "train")
        entries = read_list(list_file)
        self.num_classes = max(e.label for e in entries) + 1
        batch = settings.batch_size
        if len(entries) < batch:
            raise VtdlError(
                f"pretrain.batch_size: {batch} is more than the {len(entries)} training videos "
                f"of {list_file}"
            )
        self.model = build_model(
            self.method, self.backbone_name, settings, self.num_classes, self.seed
        )
        # One optimizer step enqueues the keys of all its micro-batches.
        self.model.check_training_set(len(entries), batch * settings.grad_accum)
        augment = ClipAugment(
            settings.crop_size,
            settings.resize_short,
            rotation=settings.rotation,
            **dict(zip(JITTER_OPS, settings.color_jitter, strict=True)),
            faithful_jitter=settings.faithful_jitter,
        )
        # `augment_on`: on CUDA the loader only draws each clip's parameters and cuts a uint8
        # window; the float work runs in batch on the card (`_input`), same draws.
        self.device_augment: DeviceClipAugment | None = None
        if augment_place(settings.augment_on, self.runtime.device) == "device":
            augment = self.device_augment = DeviceClipAugment(augment)
        self.dataset = TripletDataset(
            list_file,
            args.frames,
            settings.clip_len,
            settings.stride,
            augment,
            seed=self.seed,
            views=tuple(v for v in self.model.inputs if v in TripletDataset.VIEWS),
            sampler=settings.sampler,
            negative_rule=settings.negative,
            min_gap=settings.min_gap,
        )
        # Each rank loads its share of every global batch of `batch_size` (vtdl.distributed).
        self.share = distributed.per_rank_batch(batch, self.place.world_size, "pretrain.batch_size")
        self.sampler = EpochShuffle(
            len(self.dataset), self.seed, self.place.rank, self.place.world_size, batch
        )
        self.loader: DataLoader | None = None
        self.steps_per_epoch = len(entries) // batch  # drop_last: every step sees a full batch
        self.runtime.place(self.model)
        # What the steps call: the model itself, or under torchrun its DistributedDataParallel
        # wrapper (gradients averaged over ranks); checkpoints hold the model's own state.
        self.step_model = distributed.wrap(self.model, self.runtime.device)
        self.train_state = TrainState(
            self.model,
            settings.build_optimizer([p for p in self.model.parameters() if p.requires_grad]),
            self.runtime.grad_scaler(),
            settings,
        )
        self.tca = METHODS[self.method].tca
        self.identity = {
            "method": self.method,
            "backbone": self.backbone_name,
            "seed": self.seed,
            "dataset": args.dataset,
            "settings": settings.as_dict(),
            "train_list_sha256": sha256_file(list_file),
        }
        self.digest = tracking.params_digest(self.identity)

    @property
    def epoch(self) -> int:
        return self.train_state.epoch

    def checkpoint(self, means: dict[str, float]) -> dict[str, Any]:
        """The checkpoint after an epoch whose metric means are `means` (kept for summary.json:
        a job re-started after its last epoch has no epoch of its own to report)."""
        return self.train_state.state_dict(
            self.digest, step=self.epoch * self.steps_per_epoch, epoch_means=dict(means)
        )

    def check_ranks_agree(self) -> None:
        """Under torchrun: refuse to checkpoint unless every rank holds rank 0's weights and
        the model's other shared state (the queue; a drifted rank would have trained against
        other negatives)."""
        if self.place.is_distributed:
            for what, tensor in self.model.rank_checked().items():
                distributed.check_identical(tensor, what)
            first = next(self.model.parameters()).detach()
            distributed.check_identical(first, "the first weight tensor")

    # ------------------------------------------------------------------ training

    def _loader(self) -> DataLoader:
        """The epoch's loader. One loader for the whole run: its worker processes persist
        across epochs (no re-spawn, no second import of torch each epoch); the epoch reaches
        them through the sampler's (epoch, index) keys."""
        self.sampler.epoch = self.epoch
        if self.loader is None:
            workers = self.settings.num_workers
            self.loader = DataLoader(
                self.dataset,
                batch_size=self.share,
                sampler=self.sampler,
                drop_last=True,
                num_workers=workers,
                pin_memory=self.runtime.device.type == "cuda",
                persistent_workers=workers > 0,
                prefetch_factor=4 if workers else None,
            )
        return self.loader

    def _input(self, view: Any) -> torch.Tensor:
        """One batch entry on the device; a clip view still to augment ({"frames", "params"}
        from `DeviceClipAugment`) is augmented there, in batch."""
        if isinstance(view, dict):
            view = self.device_augment.apply(view, self.runtime.device)
        return self.runtime.to_device(view)

    def _forward(self, batch: dict[str, Any], step: int, last: bool) -> dict[str, Any]:
        """The loss and metrics of one micro-batch; `last`: it ends an optimizer step."""
        inputs = {name: self._input(batch[name]) for name in self.model.inputs}
        with self.runtime.autocast():
            if self.tca:  # the global batch's draws: this rank's rows of them
                inputs["anchor"] = temporal_consistent_augmentation(
                    inputs["anchor"],
                    self.settings.tca_alpha,
                    seeds.torch_generator(self.seed, seeds.TCA_STEP, step),
                    global_batch=self.settings.batch_size,
                    offset=self.place.rank * self.share,
                )
            return self.step_model(**inputs, last_micro_batch=last)

    def train_epoch(self, run: tracking.Run) -> dict[str, float]:
        accum = self.settings.grad_accum
        optimizer, scaler = self.train_state.optimizer, self.train_state.scaler
        lr = self.train_state.start_epoch()
        self.model.train()
        sums: dict[str, float] = defaultdict(float)
        waited = 0.0
        epoch_start = tick = time.perf_counter()
        bar = progress(
            self._loader(),
            f"pretrain {self.method} epoch {self.epoch + 1}/{self.settings.epochs}",
            total=self.steps_per_epoch,
            unit="batch",
        )
        for i, batch in enumerate(bar):
            fetched = time.perf_counter()
            wait = fetched - tick
            waited += wait
            step = self.epoch * self.steps_per_epoch + i
            # An optimizer step averages the losses of its micro-batches (the last group of an
            # epoch may be shorter); it ends at the epoch's end, so checkpoints fall between.
            group = min(accum, self.steps_per_epoch - i // accum * accum)
            last = (i + 1) % accum == 0 or i + 1 == self.steps_per_epoch
            # Gradients are averaged over ranks once per optimizer step, at its last micro-batch.
            syncing = contextlib.nullcontext()
            if not last and self.step_model is not self.model:
                syncing = self.step_model.no_sync()
            with syncing:
                out = self._forward(batch, step, last)
                scaler.scale(out["loss"] / group).backward()
            if last:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            metrics = {name: float(value) for name, value in out["metrics"].items()}
            metrics = distributed.mean_over_ranks(metrics, self.runtime.device)  # global batch
            tick = time.perf_counter()
            metrics["lr"] = lr
            # Throughput of the whole step (waiting for data included); the wait on its own.
            clips = len(batch["index"]) * self.place.world_size
            metrics["clips_per_s"] = clips / max(tick - fetched + wait, 1e-9)
            metrics["data_wait_frac"] = wait / max(tick - fetched + wait, 1e-9)
            run.log_metrics({f"pretrain/{k}": v for k, v in metrics.items()}, step=step)
            for name, value in metrics.items():
                sums[name] += value
        elapsed = time.perf_counter() - epoch_start
        means = {name: total / self.steps_per_epoch for name, total in sums.items()}
        means["clips_per_s"] = self.steps_per_epoch * self.settings.batch_size / elapsed
        means["data_wait_frac"] = waited / elapsed
        self.train_state.epoch += 1
        run.log_metrics({f"pretrain/epoch/{k}": v for k, v in means.items()}, step=self.epoch)
        return means


def _tags(args: argparse.Namespace, settings: PretrainSettings) -> dict[str, Any]:
    return {
        "dataset": args.dataset,
        "backbone": args.backbone,
        "method": args.method,
        "seed": args.seed,
        "split": settings.split,
    }


def pretrain(
    args: argparse.Namespace, settings: PretrainSettings | Mapping[str, Any]
) -> dict[str, Any]:
    """Run (or resume) one pretraining job; returns the summary written to summary.json.

    Under torchrun every rank trains and rank 0 alone logs and writes; the other ranks return
    an empty summary.
    """
    set_up_process(args)
    settings = PretrainSettings.of(settings).for_job(args.backbone)
    try:
        job = _Job(args, settings)
        return _train(job, args, settings)
    finally:
        distributed.shutdown()


def _train(job: _Job, args: argparse.Namespace, settings: PretrainSettings) -> dict[str, Any]:
    main, say = job.place.is_main, job.place.say
    checkpoint = job.out / "checkpoint.pt"
    if main:  # a read-only or full output folder fails now, not after the first epochs
        check_writable(checkpoint)
    if job.train_state.resume(checkpoint, job.digest):  # every rank reads it
        say(f"resuming from {checkpoint} at epoch {job.epoch}", flush=True)
    epochs = settings.epochs
    params = {
        "method": args.method,
        "backbone": args.backbone,
        "seed": args.seed,
        **settings.as_dict(),
    }
    run_name = f"{args.method} {args.backbone} s{args.seed}"
    tags = _tags(args, settings)
    if job.place.is_distributed:  # not a parameter: a run may resume on another world size
        tags["world_size"] = job.place.world_size
    means: dict[str, float] = dict(job.train_state.facts.get("epoch_means", {}))
    with tracking.start_run(
        "pretrain",
        params,
        tags,
        run_name=run_name,
        resume_run_id=job.train_state.run_id,
        system_metrics=True,
        enabled=main,
        claim=tracking.claim_path(job.out / "encoder.pt"),
    ) as run:
        job.train_state.run_id = run.run_id or job.train_state.run_id
        run.log_dataset(
            f"{args.dataset}/split{settings.split}/train",
            job.list_file,
            job.identity["train_list_sha256"],
            "training",
        )
        ranks = f" on {job.place.world_size} ranks" if job.place.is_distributed else ""
        say(
            f"pretrain {args.method}/{args.backbone} seed {args.seed} on {args.dataset}: "
            f"{len(job.dataset)} videos, {job.steps_per_epoch} steps/epoch, {epochs} epochs, "
            f"device {job.runtime.device}{ranks}; MLflow run {run.run_id}",
            flush=True,
        )
        while job.epoch < epochs:
            means = job.train_epoch(run)
            say(
                f"epoch {job.epoch}/{epochs}: "
                + ", ".join(f"{k} {v:.4g}" for k, v in sorted(means.items())),
                flush=True,
            )
            if settings.checkpoint_due(job.epoch):
                job.check_ranks_agree()
                if main:
                    save_checkpoint(checkpoint, job.checkpoint(means))
                run.flush()
        if not main:
            return {}
        return _write_outputs(job, args, settings, run, means)


def _write_outputs(
    job: _Job,
    args: argparse.Namespace,
    settings: PretrainSettings,
    run: tracking.Run,
    means: dict,
) -> dict[str, Any]:
    """checkpoint.pt (if a finished run was re-started without one), encoder.pt, summary.json."""
    checkpoint = job.out / "checkpoint.pt"
    if not checkpoint.is_file():  # a finished run re-started with no checkpoint to write
        save_checkpoint(checkpoint, job.checkpoint(means))
    checksum = sha256_file(checkpoint)
    run.set_tags({"checkpoint_path": str(checkpoint), "checkpoint_sha256": checksum})
    backbone = job.model.backbone
    source = {
        "stage": "pretrain",
        **{k: str(v) for k, v in _tags(args, settings).items()},
        "mlflow_run_id": run.run_id,
        "params_digest": job.digest,
    }
    save_encoder(
        job.out / "encoder.pt",
        args.backbone,
        settings.options_of(args.backbone),
        backbone.state_dict(),
        source,
    )
    # The encoder the downstream stages start from, in the run with its checksum.
    run.log_artifact(job.out / "encoder.pt", "encoder")
    run.set_tags({"encoder_sha256": sha256_file(job.out / "encoder.pt")})
    summary = {
        "mlflow_run_id": run.run_id,
        "checkpoint_sha256": checksum,
        "metrics": {f"pretrain/epoch/{k}": v for k, v in sorted(means.items())},
    }
    atomic_write_json(job.out / "summary.json", summary)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", required=True, choices=PRETRAINED_METHODS, help="the pretraining method"
    )
    parser.add_argument("--backbone", required=True, help="a name of vtdl.names.BACKBONES")
    parser.add_argument(
        "--seed", type=int, required=True, help="seeds the model, the sampling and TCA"
    )
    parser.add_argument("--dataset", required=True, help="data set name (for tags)")
    parser.add_argument("--lists", required=True, help="canonical split lists: data/splits/<ds>")
    parser.add_argument("--frames", required=True, help="frames root: data/frames/<ds>")
    parser.add_argument("--out", required=True, help="output folder of this job")
    add_stage_arguments(parser, "pretrain")


def run(args: argparse.Namespace) -> None:
    section = load_settings(args.settings, "pretrain", optional=PRETRAIN_GRID)
    settings = PretrainSettings.from_section(section)
    summary = pretrain(args, settings)
    if summary:  # rank 0 (the only one under torchrun that writes)
        print(json.dumps(summary, indent=2, sort_keys=True))
