"""Data-parallel training under `torchrun`: N processes, one global batch, one set of outputs.

`torchrun --nproc_per_node=N -m vtdl.cli pretrain ...` (or `finetune`) starts N copies of a job
and tells each its place through the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT). `vtdl --gpus N` on a machine with N free GPUs launches exactly that (vtdl.cli).
Without torchrun every function here is the single-process identity, so the stages call them
unconditionally.

What "the same training" means across world sizes (docs/method.md §6):
- `batch_size` is the *global* batch: each of the N ranks takes a contiguous 1/N of every
  step's batch (`EpochShuffle`), so the concatenation of the ranks' micro-batches, in rank
  order, is the single-process batch, and the learning rate keeps its meaning.
- gradients are averaged over ranks (DistributedDataParallel); every per-sample loss here is
  independent of the other samples of the batch, so the averaged gradient is the
  single-process one up to float summation order - except through batch norm, whose
  statistics are per rank (as per GPU in the paper's 8-GPU runs).
- the keys are all-gathered before they enter the queue, so every rank holds the same queue.
- only rank 0 logs to MLflow, prints progress, and writes checkpoints and outputs.

Backends: NCCL when the job runs on CUDA, Gloo on the CPU (the CPU test of this module).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vtdl.errors import VtdlError


@dataclass(frozen=True)
class Place:
    """This process's place in the job: rank among `world_size`, `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def say(self, *args: object, **kwargs: object) -> None:
        """`print` on rank 0; the other ranks stay quiet (one log per job)."""
        if self.is_main:
            print(*args, **kwargs)  # type: ignore[call-overload]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise VtdlError(
            f"environment variable {name}: expected an integer, got {value!r}"
        ) from None


def place() -> Place:
    """This process's place: from the process group once it exists, else from the environment."""
    if dist.is_available() and dist.is_initialized():
        return Place(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return Place(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def init(device: torch.device) -> tuple[Place, torch.device]:
    """Join the job's process group (when started by torchrun) and pick this rank's device.

    Returns this process's place and the device it trains on: `cuda:<local rank>` on CUDA (the
    job's own GPUs, as vtdl.gpuslots left them visible), `device` unchanged otherwise.
    """
    where = place()
    if not where.is_distributed:
        return where, device
    if device.type == "cuda":
        if where.local_rank >= torch.cuda.device_count():
            raise VtdlError(
                f"torchrun rank {where.rank}: local rank {where.local_rank} but only "
                f"{torch.cuda.device_count()} visible GPU(s); give --nproc_per_node at most that"
            )
        torch.cuda.set_device(where.local_rank)
        device = torch.device("cuda", where.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return place(), device


def shutdown() -> None:
    """Leave the process group (after the last collective call of the job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True when this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def per_rank_batch(global_batch: int, world_size: int, key: str) -> int:
    """This rank's share of a global batch; VtdlError naming `key` unless N divides it."""
    if global_batch % world_size:
        raise VtdlError(
            f"{key}: the global batch {global_batch} must be divisible by the {world_size} "
            f"processes (torchrun --nproc_per_node) so every rank takes an equal share"
        )
    return global_batch // world_size


def share_of_batches(order: list[int], batch: int, rank: int, world_size: int) -> list[int]:
    """Rank `rank`'s items of an epoch: `order` cut into global batches of `batch` (the last,
    incomplete one dropped, so every rank takes as many steps), and of each batch the
    `rank`-th contiguous 1/`world_size`. The ranks' shares of one step, concatenated in rank
    order, are the single-process batch of that step."""
    share = batch // world_size
    steps = len(order) // batch
    return [i for step in range(steps) for i in order[step * batch + rank * share :][:share]]


@torch.no_grad()
def all_gather(tensor: Tensor) -> Tensor:
    """Every rank's `tensor` concatenated along dim 0 in rank order (no gradient); the tensor
    itself in one process. All ranks must pass the same shape."""
    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def broadcast(tensor: Tensor) -> Tensor:
    """Rank 0's `tensor` on every rank (in place); unchanged in one process."""
    if active():
        dist.broadcast(tensor, src=0)
    return tensor


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each value over the ranks (the global batch's metric when every rank holds
    an equal share); the values themselves in one process."""
    if not active() or not values:
        return values
    names = sorted(values)
    stacked = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    stacked /= dist.get_world_size()
    return dict(zip(names, stacked.tolist(), strict=True))


def check_identical(tensor: Tensor, what: str) -> None:
    """Raise on every rank unless all ranks hold bit-identical `tensor` (e.g. the queue: a rank
    whose queue drifted would train against other negatives than rank 0 checkpoints)."""
    if not active():
        return
    gathered = all_gather(tensor.unsqueeze(0))
    differing = [r for r in range(1, len(gathered)) if not torch.equal(gathered[r], gathered[0])]
    if differing:
        raise VtdlError(f"{what} differs between rank 0 and rank(s) {differing}")


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` under DistributedDataParallel when the job has several ranks, else `model`.

    Buffers (the queue and its pointer, batch-norm running statistics) are broadcast from rank 0
    at each forward, so every rank resumes and checkpoints the same state.
    """
    if not active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
