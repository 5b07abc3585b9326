"""Downstream stages on tiny videos: labelled subset, grid, finetune / linear / retrieval jobs."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vtdl import tracking
from vtdl.checkpoint import load_checkpoint, save_encoder
from vtdl.config import load_settings, load_yaml
from vtdl.data.clips import VideoEntry
from vtdl.data.framestore import frame_file_path, write_frames
from vtdl.downstream import cached, features, finetune, grid, linear, retrieval
from vtdl.downstream.job import FEATURE_SETTINGS, labelled_subset
from vtdl.errors import VtdlError
from vtdl.models import build_backbone
from vtdl.settings import FinetuneSettings

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["Left", "Right", "Up"]
TRAIN_PER_CLASS, TEST_PER_CLASS = 4, 2
TINY = {"channels": [4, 8, 8, 16]}  # a small3d that trains in milliseconds
CLIPS = 3


def _entries(counts: list[int]) -> list[VideoEntry]:
    return [
        VideoEntry(f"c{label}/v{i}.avi", label, f"c{label}", 10)
        for label, count in enumerate(counts)
        for i in range(count)
    ]


def test_labelled_subset_is_per_class_deterministic_and_independent_of_other_classes():
    entries = _entries([6, 2, 5])
    picked = labelled_subset([e.label for e in entries], 3, seed=0)
    labels = [entries[i].label for i in picked]
    assert labels.count(0) == 3 and labels.count(1) == 2 and labels.count(2) == 3  # 1: all it has
    assert picked == sorted(picked)
    assert labelled_subset([e.label for e in entries], 3, seed=0) == picked
    draws = {tuple(labelled_subset([e.label for e in entries], 3, seed=s)) for s in range(6)}
    assert len(draws) > 1  # the seed matters
    # Dropping class 2 from the list leaves class 0's draw unchanged.
    fewer = _entries([6, 2])
    paths = {entries[i].path for i in picked if entries[i].label == 0}
    assert {
        fewer[i].path for i in labelled_subset([e.label for e in fewer], 3, 0) if i < 6
    } == paths
    assert labelled_subset([e.label for e in entries], 0, seed=0) == list(range(len(entries)))


# ----------------------------------------------------------------------------------------------
# Grid (what downstream.smk runs)
# ----------------------------------------------------------------------------------------------


def test_grid_targets_settings_and_options():
    config = load_yaml(ROOT / "params.yaml")
    grid.check(config)
    targets = grid.targets(config)
    d, p = config["downstream"], config["pretrain"]
    n_methods = len(p["methods"]) + 2
    count = len(d["datasets"]) * len(d["splits"]) * n_methods * len(p["backbones"])
    assert len(targets) == 3 * count * len(p["seeds"])
    assert len(set(targets)) == len(targets)
    assert f"results/finetune/{d['datasets'][0]}/split1/scratch_small3d_s0.json" in targets
    settings = json.loads(grid.settings_json(config, "finetune"))
    assert "finetune" in settings and "linear" not in settings and "datasets" not in settings
    assert load_settings(grid.settings_json(config, "retrieval"), "downstream") == {
        k: v for k, v in d.items() if k not in ("datasets", "splits", "finetune", "linear")
    }
    assert sorted(json.loads(grid.settings_json(config, "features"))) == sorted(FEATURE_SETTINGS)
    w = SimpleNamespace(method="scratch", backbone="small3d", seed="1", ds="synth_hmdb", split="1")
    assert "--encoder none" in grid.command_options(config, w)
    w.method = "moco_td"
    encoder = f"results/pretrain/{p['dataset']}/moco_td_small3d_s1/encoder.pt"
    assert f"--encoder {encoder}" in grid.command_options(config, w)
    bad = {**config, "downstream": {**d, "datasets": ["nope"]}}
    with pytest.raises(VtdlError, match="downstream.datasets: 'nope'"):
        grid.check(bad)


def test_original_preset_sets_the_learning_rate_by_format():
    section = FinetuneSettings.from_section(
        load_settings(str(ROOT / "params.yaml"), "downstream")["finetune"]
    )
    original = section.replace(preset="original")
    assert finetune.resolve_recipe(original, "hmdb51").lr == 1e-3
    recipe = finetune.resolve_recipe(original, "ucf101")
    assert recipe.lr == 5e-4 and recipe.optimizer == "sgd" and recipe.epochs == 45
    assert recipe.milestones == [10, 20, 25, 30, 35, 40] and recipe.lr_gamma == 0.3
    with pytest.raises(VtdlError, match="preset"):
        finetune.resolve_recipe(original, None)
    assert finetune.resolve_recipe(section, None) == section


# ----------------------------------------------------------------------------------------------
# Jobs on a tiny data set
# ----------------------------------------------------------------------------------------------


def _write_set(root: Path, video) -> tuple[Path, Path]:
    """3 classes x (4 train + 2 test) tiny videos from `video(rng, label, frames)`: frame files,
    split lists and classes.csv under `root`; returns (frames, lists)."""
    rng = np.random.default_rng(0)
    frames = root / "frames"
    lists = root / "splits"
    (lists / "split1").mkdir(parents=True)
    rows = {"train": ["path,label,class,frames"], "test": ["path,label,class,frames"]}
    for label, name in enumerate(CLASSES):
        for i in range(TRAIN_PER_CLASS + TEST_PER_CLASS):
            rel = f"{name}/v{i}.avi"
            count = int(rng.integers(8, 14))
            write_frames(frame_file_path(frames, rel), video(rng, label, count), codec="raw")
            which = "train" if i < TRAIN_PER_CLASS else "test"
            rows[which].append(f"{rel},{label},{name},{count}")
    for which, lines in rows.items():
        (lists / "split1" / f"{which}.csv").write_text("\n".join(lines) + "\n")
    classes = ["label,class", *(f"{i},{n}" for i, n in enumerate(CLASSES))]
    (lists / "classes.csv").write_text("\n".join(classes) + "\n")
    return frames, lists


def _noise_video(rng, label: int, frames: int) -> np.ndarray:
    return rng.integers(0, 255, (frames, 18, 22, 3), dtype=np.uint8)


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    """3 classes x (4 train + 2 test) tiny videos, split lists, an encoder, a private store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("VTDL_EXPERIMENT", raising=False)
    frames, lists = _write_set(tmp_path, _noise_video)
    torch.manual_seed(0)
    encoder = tmp_path / "encoder.pt"
    source = {"stage": "pretrain", "method": "vtdl", "dataset": "pool", "seed": "3"}
    source |= {"mlflow_run_id": "pretrain-run-1", "params_digest": "abc"}
    save_encoder(encoder, "small3d", TINY, build_backbone("small3d", **TINY).state_dict(), source)
    return SimpleNamespace(root=tmp_path, frames=frames, lists=lists, encoder=encoder)


def _settings(**changes) -> dict:
    settings = load_settings(str(ROOT / "params.yaml"), "downstream")
    settings.update(
        labels_per_class=3,
        clip_len=4,
        stride=2,
        crop_size=16,
        resize_short=18,
        test_clips=CLIPS,
        batch_size=4,
        eval_batch_size=4,
        num_workers=0,
        device="cpu",
    )
    settings["finetune"] = {**settings["finetune"], "epochs": 4, "checkpoint_every": 2}
    settings.update(changes)
    return settings


def _args(module, tiny, out: str, *extra: str, settings: dict | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    argv = [
        "--dataset", "tinyset", "--split", "1", "--lists", str(tiny.lists),
        "--frames", str(tiny.frames), "--out", str(tiny.root / out),
        "--settings", json.dumps(settings or _settings()), *extra,
    ]  # fmt: skip
    return parser.parse_args(argv)


def _scratch(*extra: str) -> tuple[str, ...]:
    return ("--encoder", "none", "--backbone", "small3d", "--backbone-options",
            json.dumps(TINY), "--seed", "5", *extra)  # fmt: skip


def _check_accuracies(metrics: dict, protocol: str) -> None:
    names = {
        f"tinyset/split1/{protocol}/{m}_{c}clip"
        for m in ("top1", "top5", "meanclass")
        for c in (1, CLIPS)
    }
    assert set(metrics) == names
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    # 3 classes: every true label is within the top 5
    assert metrics[f"tinyset/split1/{protocol}/top5_1clip"] == 1.0


def _run_of(result: dict) -> dict:
    (run,) = [r for r in tracking.find_runs() if r["run_id"] == result["mlflow_run_id"]]
    return run


def test_finetune_from_an_encoder_writes_result_tags_curves_and_artifacts(tiny):
    result = finetune.finetune(_args(finetune, tiny, "ft.json", "--encoder", str(tiny.encoder)))
    assert json.loads((tiny.root / "ft.json").read_text()) == result
    _check_accuracies(result["metrics"], "finetune")
    run = _run_of(result)
    assert run["status"] == "FINISHED"
    tags = run["tags"]
    assert tags["stage"] == "finetune" and tags["dataset"] == "tinyset" and tags["split"] == "1"
    assert tags["method"] == "vtdl" and tags["seed"] == "3"  # from the encoder's record
    assert tags["pretrain_dataset"] == "pool" and tags["pretrain_run_id"] == "pretrain-run-1"
    # Nested under its pretraining run in the UI, with a short name and its lists as inputs.
    assert tags["mlflow.parentRunId"] == "pretrain-run-1"
    assert run["run_name"] == "finetune tinyset/1"
    assert run["params"]["finetune.epochs"] == "4" and run["params"]["num_train_videos"] == "9"
    curve = tracking.metric_history(result["mlflow_run_id"], "tinyset/split1/finetune/train_loss")
    assert [step for step, _ in curve] == [1, 2, 3, 4]
    from mlflow import MlflowClient

    inputs = MlflowClient().get_run(result["mlflow_run_id"]).inputs.dataset_inputs
    assert sorted((i.dataset.name, i.tags[0].value) for i in inputs) == [
        ("tinyset/split1/test", "evaluation"),
        ("tinyset/split1/train", "training"),
    ]
    artifacts = {a.path for a in MlflowClient().list_artifacts(result["mlflow_run_id"])}
    assert artifacts == {
        f"confusion_{CLIPS}clip.png",
        f"confusion_{CLIPS}clip.json",
        "classes.json",
    }
    assert not (tiny.root / "ft.ckpt").exists()  # the resume checkpoint goes once done


def test_interrupted_finetune_resumes_to_the_same_weights(tiny, monkeypatch):
    uninterrupted = finetune.finetune(
        _args(finetune, tiny, "a.json", *_scratch("--save-model", str(tiny.root / "a.pt")))
    )
    real_epoch = finetune.train_one_epoch

    def killed_in_epoch_3(trainer):
        if trainer.train_state.epoch == 2:  # after the checkpoint of epoch 2
            raise KeyboardInterrupt
        return real_epoch(trainer)

    monkeypatch.setattr(finetune, "train_one_epoch", killed_in_epoch_3)
    args = _args(finetune, tiny, "b.json", *_scratch("--save-model", str(tiny.root / "b.pt")))
    with pytest.raises(KeyboardInterrupt):
        finetune.finetune(args)
    assert (tiny.root / "b.ckpt").is_file() and not (tiny.root / "b.json").exists()
    killed = [r for r in tracking.find_runs() if r["status"] == "KILLED"]
    assert len(killed) == 1

    monkeypatch.setattr(finetune, "train_one_epoch", real_epoch)
    resumed = finetune.finetune(args)
    assert resumed["mlflow_run_id"] == killed[0]["run_id"]  # the same MLflow run continues
    assert _run_of(resumed)["tags"]["resume_count"] == "1"
    assert resumed["metrics"] == uninterrupted["metrics"]
    a, b = (
        load_checkpoint(tiny.root / "a.pt")["model"],
        load_checkpoint(tiny.root / "b.pt")["model"],
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_changed_settings_start_afresh_instead_of_resuming(tiny, monkeypatch):
    real_epoch = finetune.train_one_epoch

    def killed(trainer):
        if trainer.train_state.epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(trainer)

    monkeypatch.setattr(finetune, "train_one_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        finetune.finetune(_args(finetune, tiny, "c.json", *_scratch()))
    monkeypatch.setattr(finetune, "train_one_epoch", real_epoch)
    settings = _settings()
    settings["finetune"]["lr"] = 0.002
    result = finetune.finetune(_args(finetune, tiny, "c.json", *_scratch(), settings=settings))
    assert _run_of(result)["tags"].get("resume_count") is None  # a new run, from epoch 0


def _feature_settings(settings: dict | None = None) -> dict:
    settings = settings or _settings()
    return {k: settings[k] for k in FEATURE_SETTINGS}


def _features(tiny, out: str, *extra: str, settings: dict | None = None) -> Path:
    features.compute_features(
        _args(features, tiny, out, *extra, settings=_feature_settings(settings))
    )
    return tiny.root / out


def _cached_args(module, tiny, features_file: Path, out: str, settings: dict | None = None):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    argv = ["--features", str(features_file), "--out", str(tiny.root / out),
            "--settings", json.dumps(settings or _settings())]  # fmt: skip
    return parser.parse_args(argv)


def test_features_hold_every_clip_of_every_video_and_are_deterministic(tiny):
    path = _features(tiny, "scratch.npz", *_scratch())
    loaded = cached.load_features(path)
    n_train, n_test = len(CLASSES) * TRAIN_PER_CLASS, len(CLASSES) * TEST_PER_CLASS
    dim = TINY["channels"][-1]
    assert loaded.train.shape == (n_train, CLIPS, dim) and loaded.test.shape == (n_test, CLIPS, dim)
    assert loaded.test_centre.shape == (n_test, dim)
    assert loaded.train_labels.tolist() == [i // TRAIN_PER_CLASS for i in range(n_train)]
    assert loaded.meta["method"] == "scratch" and loaded.meta["seed"] == 5
    again = cached.load_features(_features(tiny, "again.npz", *_scratch()))
    assert np.array_equal(again.train, loaded.train) and np.array_equal(again.test, loaded.test)
    encoded = cached.load_features(_features(tiny, "enc.npz", "--encoder", str(tiny.encoder)))
    assert encoded.meta["pretrain_run_id"] == "pretrain-run-1" and encoded.meta["seed"] == 3
    assert not np.array_equal(encoded.train, loaded.train)


def test_linear_probe_and_retrieval_read_the_cached_features(tiny):
    scratch = _features(tiny, "scratch.npz", *_scratch())
    result = linear.linear_probe(_cached_args(linear, tiny, scratch, "lin.json"))
    _check_accuracies(result["metrics"], "linear")
    run = _run_of(result)
    assert run["tags"]["stage"] == "linear" and run["tags"]["method"] == "scratch"
    assert "pretrain_run_id" not in run["tags"] and "mlflow.parentRunId" not in run["tags"]
    assert run["run_name"] == "linear tinyset/1 scratch small3d s5"
    assert "linear.weight_decay" in run["params"] and "finetune.lr" not in run["params"]
    assert run["params"]["num_train_videos"] == "9"  # labels_per_class 3 x 3 classes
    again = linear.linear_probe(_cached_args(linear, tiny, scratch, "lin2.json"))
    assert again["metrics"] == result["metrics"]  # deterministic

    encoded = _features(tiny, "enc.npz", "--encoder", str(tiny.encoder))
    result = retrieval.retrieval(_cached_args(retrieval, tiny, encoded, "ret.json"))
    recall = [
        result["metrics"][f"tinyset/split1/retrieval/recall_at_{k}"] for k in (1, 5, 10, 20, 50)
    ]
    assert recall == sorted(recall) and all(0.0 <= r <= 1.0 for r in recall)
    assert recall[-1] == 1.0  # k capped at the 12 gallery videos: every class is found
    run = _run_of(result)
    assert (
        run["tags"]["stage"] == "retrieval" and run["tags"]["pretrain_run_id"] == "pretrain-run-1"
    )
    assert run["tags"]["seed"] == "3" and run["tags"]["method"] == "vtdl"


def test_fit_linear_separates_separable_features_and_penalises_weights():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    centres = rng.normal(size=(3, 5)) * 4
    x = centres[labels] + rng.normal(size=(60, 5))
    weight, bias = linear.fit_linear(x, labels, 3, weight_decay=1e-3, max_iter=200)
    assert ((x @ weight + bias).argmax(axis=1) == labels).mean() > 0.95
    strong, _ = linear.fit_linear(x, labels, 3, weight_decay=10.0, max_iter=200)
    assert np.abs(strong).sum() < np.abs(weight).sum()


def test_a_stale_or_broken_features_file_is_refused_naming_the_key(tiny):
    path = _features(tiny, "scratch.npz", *_scratch())
    with pytest.raises(VtdlError, match=r"downstream\.test_clips = 3, but --settings gives 5"):
        linear.linear_probe(_cached_args(linear, tiny, path, "x.json", _settings(test_clips=5)))
    broken = tiny.root / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(VtdlError, match="broken.npz: not a readable features file"):
        retrieval.retrieval(_cached_args(retrieval, tiny, broken, "x.json"))
    with pytest.raises(VtdlError, match="missing.npz: features file not found"):
        retrieval.retrieval(_cached_args(retrieval, tiny, tiny.root / "missing.npz", "x.json"))
    assert not list(tiny.root.glob("x.*"))


def test_bad_encoder_path_and_bad_settings_key_give_one_clear_error(tiny):
    with pytest.raises(VtdlError, match=r"--encoder .*missing\.pt: encoder file not found"):
        finetune.finetune(
            _args(finetune, tiny, "x.json", "--encoder", str(tiny.root / "missing.pt"))
        )
    settings = _settings()
    settings["finetune"]["lrr"] = 0.1
    with pytest.raises(VtdlError, match=r"downstream\.finetune.*'lrr'"):
        finetune.finetune(_args(finetune, tiny, "x.json", *_scratch(), settings=settings))
    with pytest.raises(VtdlError, match=r"downstream\.test_clips"):
        _features(tiny, "x.npz", *_scratch(), settings=_settings(test_clips=0))
    with pytest.raises(VtdlError, match="not used here: batch_size"):
        features.compute_features(_args(features, tiny, "x.npz", *_scratch()))
    with pytest.raises(VtdlError, match="needs --backbone"):
        _features(tiny, "x.npz", "--encoder", "none", "--seed", "0")
    with pytest.raises(VtdlError, match="--seed 4 does not match"):
        _features(tiny, "x.npz", "--encoder", str(tiny.encoder), "--seed", "4")
    assert not list(tiny.root.glob("x.*"))


def test_finetune_under_torchrun_trains_on_two_gloo_ranks_and_rank_zero_writes(tiny):
    args = [
        "--dataset", "tinyset", "--split", "1", "--lists", str(tiny.lists),
        "--frames", str(tiny.frames), "--out", str(tiny.root / "ddp.json"),
        "--settings", json.dumps(_settings()), "--encoder", str(tiny.encoder), "--threads", "1",
    ]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = subprocess.run(
        [*torchrun, "--nproc_per_node=2", "-m", "vtdl.cli", "finetune", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "on 2 ranks" in done.stdout
    result = json.loads((tiny.root / "ddp.json").read_text())
    _check_accuracies(result["metrics"], "finetune")
    (run,) = tracking.find_runs("tags.stage = 'finetune'")  # rank 0's, and only it
    assert run["run_id"] == result["mlflow_run_id"] and run["status"] == "FINISHED"
    # 9 labelled videos, global batch 4: 2 full steps per epoch, curves at every epoch.
    curve = tracking.metric_history(run["run_id"], "tinyset/split1/finetune/train_loss")
    assert [step for step, _ in curve] == [1, 2, 3, 4]
    assert not (tiny.root / "ddp.ckpt").exists()


def test_retrieval_logs_its_neighbours_and_the_report_draws_sheet_and_montage(tiny, caplog):
    from mlflow import MlflowClient

    from vtdl.metrics import nearest_neighbours
    from vtdl.report import pictures
    from vtdl.report.collect import load_store

    encoded = _features(tiny, "enc.npz", "--encoder", str(tiny.encoder))
    result = retrieval.retrieval(_cached_args(retrieval, tiny, encoded, "ret.json"))
    local = MlflowClient().download_artifacts(
        result["mlflow_run_id"], "neighbours.json", str(tiny.root)
    )
    queries = json.loads(Path(local).read_text())["queries"]
    # The first test video of each class, with its 5 nearest training videos, nearest first.
    test_rows = [q["test_row"] for q in queries]
    assert [q["label"] for q in queries] == [0, 1, 2] and test_rows == [0, 2, 4]
    cached_features = cached.load_features(encoded)
    expected = nearest_neighbours(
        cached_features.test.mean(axis=1)[test_rows], cached_features.train.mean(axis=1), 5
    )
    assert [q["train_rows"] for q in queries] == expected.tolist()
    assert all(
        q["labels"] == [int(cached_features.train_labels[i]) for i in q["train_rows"]]
        for q in queries
    )

    data = tiny.root / "data"
    (data / "splits").mkdir(parents=True)
    (data / "frames").mkdir()
    (data / "splits" / "tinyset").symlink_to(tiny.lists)
    (data / "frames" / "tinyset").symlink_to(tiny.frames)
    store = load_store()
    dest = tiny.root / "plots"
    (sheet,) = pictures.contact_sheets(store, data, dest)
    assert sheet == dest / "retrieval" / "tinyset_split1_vtdl_small3d_pool_s3.png"
    (montage,) = pictures.class_montages(store, data, dest)
    assert montage == dest / "classes" / "tinyset.png"
    for png in (sheet, montage):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Without the data folder the pictures are left out with a warning, never an error.
    assert pictures.contact_sheets(store, tiny.root / "nowhere", dest) == []
    assert pictures.class_montages(store, tiny.root / "nowhere", dest) == []
    assert "contact sheet left out" in caplog.text and "montage left out" in caplog.text


def test_finetune_learns_an_easy_separable_toy_set(tiny):
    """Each class is one colour channel lit over noise: fine-tuning from scratch must get
    every test video right (a broken loss, label or head would not)."""

    def coloured(rng, label: int, frames: int) -> np.ndarray:
        video = rng.integers(0, 60, (frames, 18, 22, 3), dtype=np.uint8)
        video[..., label] += 180
        return video

    frames, lists = _write_set(tiny.root / "colours", coloured)
    settings = _settings(labels_per_class=0)
    settings["finetune"] = {**settings["finetune"], "epochs": 12, "lr": 0.01}
    args = _args(finetune, tiny, "colours.json", *_scratch(), settings=settings)
    args.frames, args.lists = str(frames), str(lists)
    result = finetune.finetune(args)
    assert result["metrics"][f"tinyset/split1/finetune/top1_{CLIPS}clip"] == 1.0
    assert result["metrics"]["tinyset/split1/finetune/top1_1clip"] == 1.0
