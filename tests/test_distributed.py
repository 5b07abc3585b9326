"""Data-parallel training (vtdl.distributed) on the CPU: real torchrun, 2 Gloo ranks.

The claim under test: one step with a global batch of B on 2 ranks is the same step as in one
process (loss and updated weights within float tolerance), every rank holds the same queue,
and a run resumes across world sizes. Batch norm would differ by construction (per-rank
statistics), so these runs use small3d's GroupNorm variant, whose statistics are per clip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from filelock import FileLock
from pretrain_jobs import interrupt_at_epoch, pretrain_args, pretrain_argv, tiny_settings

from vtdl import pretrain as pretrain_stage
from vtdl import tracking
from vtdl.augment import temporal_consistent_augmentation
from vtdl.checkpoint import load_checkpoint
from vtdl.data.triplets import EpochShuffle
from vtdl.distributed import per_rank_batch
from vtdl.errors import VtdlError

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def _settings() -> dict:
    return tiny_settings(
        # SGD: a gradient difference of float rounding stays that small in the weights (Adam
        # divides by the gradient's own scale and can blow rounding up on near-zero entries).
        optimizer="sgd",
        lr=0.05,
        backbone_options={"small3d": {"channels": [4, 8, 8, 16], "norm": "group"}},
    )


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, env=_env(**env), timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def test_shares_of_the_ranks_concatenate_to_the_single_process_batches():
    single = list(EpochShuffle(22, seed=5, batch_size=8))
    shares = [list(EpochShuffle(22, 5, rank=r, world_size=2, batch_size=8)) for r in (0, 1)]
    assert [len(s) for s in shares] == [8, 8]  # 2 full global batches of 8, the rest dropped
    for step in range(2):
        rows = [key for share in shares for key in share[step * 4 : (step + 1) * 4]]
        assert rows == single[step * 8 : (step + 1) * 8]


def test_tca_of_a_rank_is_its_rows_of_the_global_batch_tca():
    clips = torch.rand(6, 3, 4, 5, 5)
    whole = temporal_consistent_augmentation(clips, 0.5, torch.Generator().manual_seed(1))
    rows = temporal_consistent_augmentation(
        clips[2:4], 0.5, torch.Generator().manual_seed(1), global_batch=6, offset=2
    )
    assert torch.equal(rows, whole[2:4])


def test_a_global_batch_the_ranks_cannot_share_equally_is_refused_with_the_key():
    assert per_rank_batch(32, 4, "pretrain.batch_size") == 8
    with pytest.raises(VtdlError, match=r"pretrain.batch_size: the global batch 6 .* 4 proc"):
        per_rank_batch(6, 4, "pretrain.batch_size")


def test_collectives_gather_in_rank_order_and_catch_a_drifted_rank(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch
            from vtdl import distributed
            from vtdl.errors import VtdlError
            where, _ = distributed.init(torch.device("cpu"))
            rank = where.rank
            gathered = distributed.all_gather(torch.full((2,), float(rank)))
            assert gathered.tolist() == [0.0, 0.0, 1.0, 1.0], gathered
            means = distributed.mean_over_ranks({"loss": float(rank)}, torch.device("cpu"))
            assert means == {"loss": 0.5}, means
            distributed.check_identical(torch.ones(3), "the same tensor")
            try:
                distributed.check_identical(torch.tensor([rank]), "the queue")
            except VtdlError as err:
                print(f"rank {rank}: {err}")
            distributed.shutdown()
            """
        )
    )
    done = _run([*TORCHRUN, "--nproc_per_node=2", str(script)])
    for rank in (0, 1):
        assert f"rank {rank}: the queue differs between rank 0 and rank(s) [1]" in done.stdout


def test_two_gloo_ranks_train_as_one_process_and_resume_across_world_sizes(
    tiny_set, tmp_path, monkeypatch
):
    root, frames, lists = tiny_set
    settings = _settings()
    # One process, uninterrupted: the reference.
    _run([sys.executable, "-m", "vtdl.cli", *pretrain_argv(root, frames, lists, "one", settings)])
    # Two ranks, launched as a Snakemake job launches them: `--gpus 2` on a machine with two
    # free GPU slots starts torchrun (the slots are faked; without CUDA the ranks use Gloo).
    gpus = {"VTDL_GPU_DEVICES": "0,1", "VTDL_GPU_LOCK_DIR": str(tmp_path / "locks")}
    argv = pretrain_argv(root, frames, lists, "two", settings)
    done = _run(
        [sys.executable, "-m", "vtdl.cli", "--debug", argv[0], "--gpus", "2", *argv[1:]], **gpus
    )
    assert "torch.distributed.run --standalone --nproc_per_node=2" in done.stderr
    assert "on 2 ranks" in done.stdout and done.stdout.count("pretrain vtdl/small3d") == 1

    one = load_checkpoint(root / "one" / "checkpoint.pt")
    two = load_checkpoint(root / "two" / "checkpoint.pt")
    assert one["epoch"] == two["epoch"] == 3
    _assert_same_state(one["model"], two["model"])  # both encoders, the queue and its pointer
    loss_one = json.loads((root / "one" / "summary.json").read_text())["metrics"]
    loss_two = json.loads((root / "two" / "summary.json").read_text())["metrics"]
    for key in ("pretrain/epoch/loss", "pretrain/epoch/pos_beats_neg"):
        assert loss_two[key] == pytest.approx(loss_one[key], abs=1e-5), key
    # Rank 0 alone logged: one MLflow run per job, the distributed one tagged with its size.
    runs = {r["run_id"]: r for r in tracking.find_runs("tags.stage = 'pretrain'")}
    assert len(runs) == 2
    assert runs[two["mlflow_run_id"]]["tags"]["world_size"] == "2"

    # Interrupted in epoch 3 in one process, resumed on two ranks: the same end again.
    interrupt_at_epoch(monkeypatch, 2)
    args = pretrain_args(root, frames, lists, "resumed")
    with pytest.raises(KeyboardInterrupt):
        pretrain_stage.pretrain(args, settings)
    first_run = load_checkpoint(root / "resumed" / "checkpoint.pt")["mlflow_run_id"]
    argv = pretrain_argv(root, frames, lists, "resumed", settings)
    done = _run([*TORCHRUN, "--nproc_per_node=2", "-m", "vtdl.cli", *argv])
    assert "resuming from" in done.stdout and "at epoch 2" in done.stdout
    resumed = load_checkpoint(root / "resumed" / "checkpoint.pt")
    _assert_same_state(one["model"], resumed["model"])
    assert resumed["mlflow_run_id"] == first_run  # the run continued, not duplicated
    assert len(tracking.find_runs("tags.stage = 'pretrain'")) == 3
    # The faked GPU slots are free again.
    for device in ("0", "1"):
        slot = FileLock(tmp_path / "locks" / f"gpu{device}.lock")
        slot.acquire(timeout=0)
        slot.release()
