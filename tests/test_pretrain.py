"""`vtdl pretrain`: outputs, MLflow logging, exact resume, the supervised reference, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from pretrain_jobs import interrupt_at_epoch, pretrain_args, tiny_settings

from vtdl import pretrain as pretrain_stage
from vtdl import tracking
from vtdl.checkpoint import load_checkpoint, load_encoder
from vtdl.errors import VtdlError
from vtdl.fsutil import sha256_file


def _weights(path):
    return load_encoder(path)[0].state_dict()


def test_pretrain_writes_encoder_summary_and_logs_to_mlflow(tiny_set):
    root, frames, lists = tiny_set
    summary = pretrain_stage.pretrain(pretrain_args(root, frames, lists, "a"), tiny_settings())
    out = root / "a"
    backbone, record = load_encoder(out / "encoder.pt")
    assert record["source"]["method"] == "vtdl" and record["source"]["stage"] == "pretrain"
    assert json.loads((out / "summary.json").read_text()) == summary
    (run,) = tracking.find_runs("tags.stage = 'pretrain'")
    assert run["run_id"] == summary["mlflow_run_id"] == record["source"]["mlflow_run_id"]
    assert run["tags"]["method"] == "vtdl" and run["tags"]["seed"] == "3"
    assert run["tags"]["checkpoint_sha256"] == summary["checkpoint_sha256"]
    assert run["run_name"] == "vtdl small3d s3"
    # The encoder handed downstream, as an artifact with its checksum; the list as an input.
    assert run["tags"]["encoder_sha256"] == sha256_file(out / "encoder.pt")
    from mlflow import MlflowClient

    client = MlflowClient()
    assert [a.path for a in client.list_artifacts(run["run_id"], "encoder")] == [
        "encoder/encoder.pt"
    ]
    (entry,) = client.get_run(run["run_id"]).inputs.dataset_inputs
    assert entry.dataset.name == "tiny/split1/train"
    # 12 videos, batch 4: 3 steps per epoch, 3 epochs.
    steps = [s for s, _ in tracking.metric_history(run["run_id"], "pretrain/loss")]
    assert steps == list(range(9))
    for name in ("pos_beats_neg", "instance_acc", "queue_sim", "clips_per_s", "data_wait_frac"):
        assert f"pretrain/{name}" in run["metrics"]
    epochs = [s for s, _ in tracking.metric_history(run["run_id"], "pretrain/epoch/loss")]
    assert epochs == [1, 2, 3]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 3 and state["model"]["queue_ptr"] == (9 * 4) % 6


def test_same_seed_gives_the_same_weights(tiny_set):
    root, frames, lists = tiny_set
    pretrain_stage.pretrain(pretrain_args(root, frames, lists, "a"), tiny_settings(epochs=1))
    pretrain_stage.pretrain(pretrain_args(root, frames, lists, "b"), tiny_settings(epochs=1))
    a, b = _weights(root / "a" / "encoder.pt"), _weights(root / "b" / "encoder.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_augmenting_on_the_device_trains_like_the_loader_path(tiny_set):
    """`augment_on: device` (the CUDA default) draws the same parameters in the loader and does
    the float work in batch: on the CPU it ends within float rounding of the per-clip path."""
    root, frames, lists = tiny_set
    runs = {}
    for place in ("loader", "device"):
        runs[place] = pretrain_stage.pretrain(
            pretrain_args(root, frames, lists, place), tiny_settings(epochs=2, augment_on=place)
        )
    loader, device = (runs[p]["metrics"]["pretrain/epoch/loss"] for p in ("loader", "device"))
    assert device == pytest.approx(loader, abs=1e-4)
    a, b = _weights(root / "loader" / "encoder.pt"), _weights(root / "device" / "encoder.pt")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


@pytest.mark.parametrize("grad_accum", [1, 2])  # 3 steps per epoch: groups of 2 and 1
def test_interrupted_then_resumed_run_matches_an_uninterrupted_one(
    tiny_set, monkeypatch, grad_accum
):
    root, frames, lists = tiny_set
    # 12 videos: the queue must stay below 12 - (batch 4 x grad_accum) keys.
    settings = tiny_settings(grad_accum=grad_accum, queue_size=6 if grad_accum == 1 else 3)
    pretrain_stage.pretrain(pretrain_args(root, frames, lists, "whole"), settings)

    lift = interrupt_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        pretrain_stage.pretrain(pretrain_args(root, frames, lists, "split"), settings)
    assert load_checkpoint(root / "split" / "checkpoint.pt")["epoch"] == 2
    assert not (root / "split" / "encoder.pt").exists()
    lift()
    pretrain_stage.pretrain(pretrain_args(root, frames, lists, "split"), settings)

    whole, resumed = (
        _weights(root / "whole" / "encoder.pt"),
        _weights(root / "split" / "encoder.pt"),
    )
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    full_state = load_checkpoint(root / "whole" / "checkpoint.pt")["model"]
    resumed_state = load_checkpoint(root / "split" / "checkpoint.pt")["model"]
    assert torch.equal(full_state["queue"], resumed_state["queue"])
    # The resumed job continued the same MLflow run.
    runs = tracking.find_runs("tags.stage = 'pretrain'")
    assert len(runs) == 2


def test_a_job_restarted_after_its_last_epoch_reports_that_epoch(tiny_set):
    """Killed between its last checkpoint and encoder.pt (or its outputs removed): the re-run
    trains nothing, and its summary still gives the last epoch's means, not an empty dict."""
    root, frames, lists = tiny_set
    first = pretrain_stage.pretrain(pretrain_args(root, frames, lists, "a"), tiny_settings())
    for name in ("encoder.pt", "summary.json"):
        (root / "a" / name).unlink()
    again = pretrain_stage.pretrain(pretrain_args(root, frames, lists, "a"), tiny_settings())
    assert again["metrics"] == first["metrics"] and "pretrain/epoch/loss" in again["metrics"]
    assert again["mlflow_run_id"] == first["mlflow_run_id"]


def test_a_job_interrupted_while_the_grid_grew_resumes_its_run(tiny_set, monkeypatch):
    """Seeds, methods and another backbone added to `pretrain` while a job was half done:
    the job resumes (same MLflow run, same parameters), since none of those lists is part of
    what it trains with."""
    root, frames, lists = tiny_set
    settings = tiny_settings(epochs=2)
    lift = interrupt_at_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        pretrain_stage.pretrain(pretrain_args(root, frames, lists, "a"), settings)
    lift()
    grown = {
        **settings,
        "methods": ["moco", "moco_td", "vtdl"],
        "backbones": ["small3d", "c3d"],
        "seeds": [0, 1, 2, 3],
        "backbone_options": {**settings["backbone_options"], "c3d": {"batch_norm": False}},
    }
    summary = pretrain_stage.pretrain(pretrain_args(root, frames, lists, "a"), grown)
    (run,) = tracking.find_runs("tags.stage = 'pretrain'")
    assert run["run_id"] == summary["mlflow_run_id"] and run["status"] == "FINISHED"
    assert not {"methods", "backbones", "seeds"} & set(run["params"])
    options = [k for k in run["params"] if k.startswith("backbone_options.")]
    assert options == ["backbone_options.small3d.channels"]


def test_changed_parameters_start_afresh_instead_of_resuming(tiny_set):
    root, frames, lists = tiny_set
    pretrain_stage.pretrain(pretrain_args(root, frames, lists, "a"), tiny_settings(epochs=1))
    first = _weights(root / "a" / "encoder.pt")
    pretrain_stage.pretrain(
        pretrain_args(root, frames, lists, "a"), tiny_settings(epochs=1, lr=0.01)
    )
    second = _weights(root / "a" / "encoder.pt")
    assert not all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("method", ["moco", "moco_td", "supervised"])
def test_other_methods_train(tiny_set, method):
    root, frames, lists = tiny_set
    summary = pretrain_stage.pretrain(
        pretrain_args(root, frames, lists, method, method=method), tiny_settings(epochs=1)
    )
    assert load_encoder(root / method / "encoder.pt")[1]["source"]["method"] == method
    metrics = summary["metrics"]
    if method == "supervised":
        assert "pretrain/epoch/train_top1" in metrics
    else:
        assert ("pretrain/epoch/pos_beats_neg" in metrics) == (method == "moco_td")


def test_queue_too_large_for_the_data_set_is_refused_with_the_key(tiny_set):
    root, frames, lists = tiny_set
    with pytest.raises(VtdlError, match=r"pretrain\.queue_size: 8 must be below .* \(12 - 4 = 8\)"):
        pretrain_stage.pretrain(
            pretrain_args(root, frames, lists, "a"), tiny_settings(queue_size=8)
        )


def test_cli_names_the_bad_settings_key(tiny_set, capsys):
    from vtdl.cli import main

    root, frames, lists = tiny_set
    settings = tiny_settings()
    settings["tau"] = 0
    code = main(
        ["pretrain", "--method", "vtdl", "--backbone", "small3d", "--seed", "0"]
        + ["--dataset", "tiny", "--lists", str(lists), "--frames", str(frames)]
        + ["--out", str(root / "x"), "--settings", json.dumps(settings)]
    )
    assert code == 2
    assert "pretrain.tau" in capsys.readouterr().err
    assert not (root / "x").exists()
