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
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from vtdl import distributed, seeds, tracking
from vtdl.augment import JITTER_OPS, ClipAugment, temporal_consistent_augmentation
from vtdl.checkpoint import (
    load_resumable,
    rng_state,
    save_checkpoint,
    save_encoder,
    set_rng_state,
)
from vtdl.config import add_settings_argument, load_settings
from vtdl.data.clips import read_list
from vtdl.data.triplets import EpochShuffle, TripletDataset
from vtdl.errors import VtdlError
from vtdl.fsutil import atomic_write_json, sha256_file
from vtdl.models import BackboneWithHead, ClassifierHead, build_backbone
from vtdl.names import PRETRAINED_METHODS, SUPERVISED
from vtdl.pretext import TemporalMoCo, method_spec, validate_queue_size
from vtdl.progress import progress
from vtdl.runtime import (
    Runtime,
    add_resource_arguments,
    build_optimizer,
    lr_at,
    select_runtime,
    set_lr,
)


def _views(method: str) -> tuple[str, ...]:
    if method == SUPERVISED:
        return ("anchor",)
    if method_spec(method).temporal_negative:
        return ("anchor", "positive", "negative")
    return ("anchor", "positive")


def backbone_options(settings: dict, backbone_name: str) -> dict[str, Any]:
    """The constructor options params.yaml gives this backbone (`pretrain.backbone_options`)."""
    return settings.get("backbone_options", {}).get(backbone_name, {})


def build_model(
    method: str, backbone_name: str, settings: dict, num_classes: int, seed: int
) -> nn.Module:
    """The model a job trains, initialised from `seed` alone."""
    seeds.seed_everything(seed)
    backbone = build_backbone(backbone_name, **backbone_options(settings, backbone_name))
    if method == SUPERVISED:
        return BackboneWithHead(backbone, ClassifierHead(backbone.feature_dim, num_classes))
    return TemporalMoCo(
        backbone,
        dim=settings["dim"],
        queue_size=settings["queue_size"],
        momentum=settings["ema"],
        tau=settings["tau"],
        use_negative=method_spec(method).temporal_negative,
        generator=seeds.torch_generator(seed, seeds.QUEUE),
        bn_splits=settings["bn_splits"],
    )


class _Job:
    """State and steps of one pretraining run."""

    def __init__(self, args: argparse.Namespace, settings: dict) -> None:
        self.args, self.settings = args, settings
        self.method, self.backbone_name, self.seed = args.method, args.backbone, args.seed
        self.out = Path(args.out)
        runtime = select_runtime(settings["device"], settings["amp"], settings["channels_last"])
        # Under torchrun: join the process group; each rank trains on its own device.
        self.place, device = distributed.init(runtime.device)
        self.runtime: Runtime = dataclasses.replace(runtime, device=device)
        self.list_file = list_file = Path(args.lists) / f"split{settings['split']}" / "train.csv"
        entries = read_list(list_file)
        self.num_classes = max(e.label for e in entries) + 1
        batch = settings["batch_size"]
        if self.method != SUPERVISED:
            # One optimizer step enqueues the keys of all its micro-batches.
            validate_queue_size(
                settings["queue_size"], len(entries), batch * settings["grad_accum"]
            )
        if len(entries) < batch:
            raise VtdlError(
                f"pretrain.batch_size: {batch} is more than the {len(entries)} training videos "
                f"of {list_file}"
            )
        augment = ClipAugment(
            settings["crop_size"],
            settings["resize_short"],
            rotation=settings["rotation"],
            **dict(zip(JITTER_OPS, settings["color_jitter"], strict=True)),
            faithful_jitter=settings["faithful_jitter"],
        )
        self.dataset = TripletDataset(
            list_file,
            args.frames,
            settings["clip_len"],
            settings["stride"],
            augment,
            seed=self.seed,
            views=_views(self.method),
            sampler=settings["sampler"],
            negative_rule=settings["negative"],
            min_gap=settings["min_gap"],
        )
        # Each rank loads its share of every global batch of `batch_size` (vtdl.distributed).
        self.share = distributed.per_rank_batch(batch, self.place.world_size, "pretrain.batch_size")
        self.sampler = EpochShuffle(
            len(self.dataset), self.seed, self.place.rank, self.place.world_size, batch
        )
        self.loader: DataLoader | None = None
        self.steps_per_epoch = len(entries) // batch  # drop_last: every step sees a full batch
        self.model = build_model(
            self.method, self.backbone_name, settings, self.num_classes, self.seed
        )
        self.model.to(self.runtime.device)
        if self.runtime.channels_last:
            self.model.to(memory_format=torch.channels_last_3d)
        # What the steps call: the model itself, or under torchrun its DistributedDataParallel
        # wrapper (gradients averaged over ranks); checkpoints hold the model's own state.
        self.step_model = distributed.wrap(self.model, self.runtime.device)
        self.optimizer = build_optimizer(
            [p for p in self.model.parameters() if p.requires_grad], settings
        )
        self.scaler = self.runtime.grad_scaler()
        self.tca = self.method != SUPERVISED and method_spec(self.method).tca
        self.identity = {
            "method": self.method,
            "backbone": self.backbone_name,
            "seed": self.seed,
            "dataset": args.dataset,
            "settings": settings,
            "train_list_sha256": sha256_file(list_file),
        }
        self.digest = tracking.params_digest(self.identity)
        self.epoch = 0
        self.run_id: str | None = None

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        return {
            "params_digest": self.digest,
            "epoch": self.epoch,
            "step": self.epoch * self.steps_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "rng": rng_state(),  # CPU and CUDA generators (dropout of the supervised head)
            "mlflow_run_id": self.run_id or "",
        }

    def resume(self) -> bool:
        """Continue from checkpoint.pt if it holds this job (every rank reads it)."""
        state = load_resumable(self.out / "checkpoint.pt", self.digest)
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["grad_scaler"])
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.run_id = state["mlflow_run_id"] or None
        return True

    def check_ranks_agree(self) -> None:
        """Under torchrun: refuse to checkpoint unless every rank holds rank 0's queue and
        weights (a drifted rank would have trained against other negatives)."""
        if self.place.is_distributed and self.method != SUPERVISED:
            distributed.check_identical(self.model.queue, "the memory queue")
        if self.place.is_distributed:
            first = next(self.model.parameters()).detach()
            distributed.check_identical(first, "the first weight tensor")

    # ------------------------------------------------------------------ training

    def _loader(self) -> DataLoader:
        """The epoch's loader. One loader for the whole run: its worker processes persist
        across epochs (no re-spawn, no second import of torch each epoch); the epoch reaches
        them through the sampler's (epoch, index) keys."""
        self.sampler.epoch = self.epoch
        if self.loader is None:
            workers = self.settings["num_workers"]
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

    def _forward(self, batch: dict[str, torch.Tensor], step: int, last: bool) -> dict[str, Any]:
        """The loss and metrics of one micro-batch; `last`: it ends an optimizer step."""
        to = self.runtime.to_device
        anchor = to(batch["anchor"])
        with self.runtime.autocast():
            if self.method == SUPERVISED:
                logits = self.step_model(anchor)
                labels = batch["label"].to(self.runtime.device)
                loss = F.cross_entropy(logits.float(), labels)
                top1 = (logits.argmax(dim=1) == labels).float().mean()
                return {"loss": loss, "metrics": {"loss": loss.detach(), "train_top1": top1}}
            if self.tca:  # the global batch's draws: this rank's rows of them
                anchor = temporal_consistent_augmentation(
                    anchor,
                    self.settings["tca_alpha"],
                    seeds.torch_generator(self.seed, seeds.TCA_STEP, step),
                    global_batch=self.settings["batch_size"],
                    offset=self.place.rank * self.share,
                )
            negative = to(batch["negative"]) if "negative" in batch else None
            return self.step_model(anchor, to(batch["positive"]), negative, last_micro_batch=last)

    def train_epoch(self, run: tracking.Run) -> dict[str, float]:
        accum = self.settings["grad_accum"]
        lr = lr_at(
            self.epoch,
            self.settings["lr"],
            self.settings["lr_schedule"],
            self.settings["epochs"],
            self.settings["milestones"],
            self.settings["lr_gamma"],
            self.settings["warmup_epochs"],
        )
        set_lr(self.optimizer, lr)
        self.model.train()
        sums: dict[str, float] = defaultdict(float)
        waited = 0.0
        epoch_start = tick = time.perf_counter()
        bar = progress(
            self._loader(),
            f"pretrain {self.method} epoch {self.epoch + 1}/{self.settings['epochs']}",
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
                self.scaler.scale(out["loss"] / group).backward()
            if last:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
            metrics = {name: float(value) for name, value in out["metrics"].items()}
            metrics = distributed.mean_over_ranks(metrics, self.runtime.device)  # global batch
            tick = time.perf_counter()
            metrics["lr"] = lr
            # Throughput of the whole step (waiting for data included); the wait on its own.
            clips = len(batch["anchor"]) * self.place.world_size
            metrics["clips_per_s"] = clips / max(tick - fetched + wait, 1e-9)
            metrics["data_wait_frac"] = wait / max(tick - fetched + wait, 1e-9)
            run.log_metrics({f"pretrain/{k}": v for k, v in metrics.items()}, step=step)
            for name, value in metrics.items():
                sums[name] += value
        elapsed = time.perf_counter() - epoch_start
        means = {name: total / self.steps_per_epoch for name, total in sums.items()}
        means["clips_per_s"] = self.steps_per_epoch * self.settings["batch_size"] / elapsed
        means["data_wait_frac"] = waited / elapsed
        self.epoch += 1
        run.log_metrics({f"pretrain/epoch/{k}": v for k, v in means.items()}, step=self.epoch)
        return means


def _tags(args: argparse.Namespace, settings: dict) -> dict[str, Any]:
    return {
        "dataset": args.dataset,
        "backbone": args.backbone,
        "method": args.method,
        "seed": args.seed,
        "split": settings["split"],
    }


def pretrain(args: argparse.Namespace, settings: dict) -> dict[str, Any]:
    """Run (or resume) one pretraining job; returns the summary written to summary.json.

    Under torchrun every rank trains and rank 0 alone logs and writes; the other ranks return
    an empty summary.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        job = _Job(args, settings)
        return _train(job, args, settings)
    finally:
        distributed.shutdown()


def _train(job: _Job, args: argparse.Namespace, settings: dict) -> dict[str, Any]:
    main, say = job.place.is_main, job.place.say
    if job.resume():
        say(f"resuming from {job.out / 'checkpoint.pt'} at epoch {job.epoch}", flush=True)
    epochs = settings["epochs"]
    params = {"method": args.method, "backbone": args.backbone, "seed": args.seed, **settings}
    run_name = f"{args.method} {args.backbone} s{args.seed}"
    tags = _tags(args, settings)
    if job.place.is_distributed:  # not a parameter: a run may resume on another world size
        tags["world_size"] = job.place.world_size
    means: dict[str, float] = {}
    with tracking.start_run(
        "pretrain",
        params,
        tags,
        run_name=run_name,
        resume_run_id=job.run_id,
        system_metrics=True,
        enabled=main,
    ) as run:
        job.run_id = run.run_id or job.run_id
        run.log_dataset(
            f"{args.dataset}/split{settings['split']}/train",
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
            if job.epoch % settings["checkpoint_every"] == 0 or job.epoch == epochs:
                job.check_ranks_agree()
                if main:
                    save_checkpoint(job.out / "checkpoint.pt", job.state())
                run.flush()
        if not main:
            return {}
        return _write_outputs(job, args, settings, run, means)


def _write_outputs(
    job: _Job, args: argparse.Namespace, settings: dict, run: tracking.Run, means: dict
) -> dict[str, Any]:
    """checkpoint.pt (if a finished run was re-started without one), encoder.pt, summary.json."""
    checkpoint = job.out / "checkpoint.pt"
    if not checkpoint.is_file():  # a finished run re-started with no checkpoint to write
        save_checkpoint(checkpoint, job.state())
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
        backbone_options(settings, args.backbone),
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
    add_settings_argument(parser, "pretrain")
    add_resource_arguments(parser)


def run(args: argparse.Namespace) -> None:
    settings = load_settings(args.settings, "pretrain")
    summary = pretrain(args, settings)
    if summary:  # rank 0 (the only one under torchrun that writes)
        print(json.dumps(summary, indent=2, sort_keys=True))
