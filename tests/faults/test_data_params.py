"""Parameters the data rules out: refused before any job, naming the key and the range allowed.

A MoCo queue that is not smaller than the training set minus the batch, a batch larger than the
(labelled) training set, a clip longer than every video. Through Snakemake: a dry run of the
whole pipeline in an empty folder fails while the job graph is built (no data/, no logs/), on the
embedded sets (sizes known from their parameters) and on a downloaded layout (sizes from its
split files). Through the CLI: the stage refuses the same values in one line when it starts, on
the lists it is given.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from refused_run import refused_dry_run
from split_files import make_ucf

from vtdl import cli
from vtdl.config import load_yaml
from vtdl.data import sizes
from vtdl.downstream.job import FEATURE_SETTINGS
from vtdl.errors import VtdlError

ROOT = Path(__file__).resolve().parents[2]
PARAMS = load_yaml(ROOT / "params.yaml")
# The shipped embedded sets: synth_ucf split 1 trains on 720 videos (10 classes x 18 groups x
# 4 clips), 100 of them labelled (10 per class); every video has at most 56 frames.
UCF_TRAIN, UCF_LABELLED, FRAMES_MAX = 720, 100, 56


# fault: (section, changes, texts the error must hold)
SNAKEMAKE_FAULTS = {
    "queue not smaller than the training set minus the batch": (
        "pretrain", {"queue_size": UCF_TRAIN - 32}, ["pretrain.queue_size", "allowed 1..687"]
    ),
    "batch larger than the labelled set (downstream)": (
        "downstream", {"batch_size": UCF_LABELLED + 1},
        ["downstream.batch_size", "labels_per_class 10", "allowed 1..100"],
    ),
    "clip longer than every video": (
        "pretrain", {"clip_len": 29, "stride": 2},  # spans 57 > 56 frames
        ["pretrain.clip_len", "datasets.synth_ucf.synth.frames_max", "allowed pretrain.clip_len "
         "1..28 at pretrain.stride 2"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SNAKEMAKE_FAULTS))
def test_snakemake_refuses_what_the_embedded_data_rules_out(tmp_path, name, fault):
    fault("bad parameters", f"{name} (Snakemake)")
    section, changes, texts = SNAKEMAKE_FAULTS[name]
    params = copy.deepcopy(PARAMS)
    params[section].update(changes)
    text = refused_dry_run(tmp_path, params)
    for expected in texts:
        assert expected in text, (expected, text[-2000:])


def test_snakemake_counts_a_downloaded_set_from_its_split_files(tmp_path, fault):
    """UCF101 layout, 3 classes x 2 groups x 2 clips in training (split 1): 12 videos."""
    fault("bad parameters", "queue not smaller than the training set minus the batch "
          "(downloaded set, Snakemake)")  # fmt: skip
    split_dir, _, videos = make_ucf(tmp_path / "download")
    for path in videos:  # a dry run reads no video: empty files make the class folders
        (tmp_path / "download" / "UCF-101" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "download" / "UCF-101" / path).touch()
    params = copy.deepcopy(PARAMS)
    params["datasets"] = {"real": {"format": "ucf101", "videos": str(tmp_path / "download" /
                                   "UCF-101"), "splits": str(split_dir)}}  # fmt: skip
    params["pretrain"].update(dataset="real", batch_size=4, queue_size=8)
    params["downstream"].update(datasets=["real"], labels_per_class=0, batch_size=4)
    work = tmp_path / "work"
    work.mkdir()
    text = refused_dry_run(work, params)
    assert "pretrain.queue_size: 8 must be below the 12 training videos of real split 1" in text
    assert "allowed 1..7" in text


def test_the_limits_are_exact_and_unknown_sizes_are_left_to_the_jobs(tmp_path):
    params = copy.deepcopy(PARAMS)
    sizes.check_data_params(params)  # the shipped values fit
    for section, key, largest in (
        ("pretrain", "queue_size", UCF_TRAIN - 32 - 1),
        ("pretrain", "batch_size", UCF_TRAIN - 2),  # with the smallest queue, 1
        ("downstream", "batch_size", UCF_LABELLED),
        ("pretrain", "clip_len", (FRAMES_MAX - 1) // 2 + 1),
        ("downstream", "clip_len", (FRAMES_MAX - 1) // 2 + 1),
    ):
        changed = copy.deepcopy(params)
        if (section, key) == ("pretrain", "batch_size"):
            changed["pretrain"]["queue_size"] = 1
            changed[section][key] = UCF_TRAIN + 1  # more than the set: named as the batch
            with pytest.raises(VtdlError, match=r"pretrain\.batch_size: 721 .* allowed 1\.\.720"):
                sizes.check_data_params(changed)
        changed[section][key] = largest
        sizes.check_data_params(changed)
        changed[section][key] = largest + 1
        # (A batch that leaves no room for a queue of 1 is named as the queue's problem.)
        named = "queue_size: 1" if (section, key) == ("pretrain", "batch_size") else key
        with pytest.raises(VtdlError, match=rf"{section}\.{named}"):
            sizes.check_data_params(changed)
    # Split files that cannot be read yet: nothing is refused here, the splits job says why.
    params["datasets"]["real"] = {"format": "kinetics", "videos": str(tmp_path),
                                  "splits": str(tmp_path)}  # fmt: skip
    params["pretrain"].update(dataset="real", queue_size=10**6)
    sizes.check_data_params(params)
    # A split the official files do not define is named.
    split_dir, _, _ = make_ucf(tmp_path / "ucf", splits=(1,))
    params["datasets"]["real"] = {"format": "ucf101", "videos": str(tmp_path),
                                  "splits": str(split_dir)}  # fmt: skip
    params["pretrain"].update(queue_size=4, batch_size=4, split=2)
    with pytest.raises(VtdlError, match=r"pretrain\.split: real has no split 2 .* split\(s\) 1"):
        sizes.check_data_params(params)


@pytest.mark.parametrize("fmt", ["ucf101", "hmdb51", "kinetics"])
def test_the_fast_count_of_a_download_equals_what_the_parser_lists(tmp_path, fmt):
    from split_files import make_hmdb, make_kinetics

    from vtdl.data import splits as sp

    maker = {"ucf101": make_ucf, "hmdb51": make_hmdb, "kinetics": make_kinetics}[fmt]
    split_dir, _, _ = maker(tmp_path)
    parse = {"ucf101": sp.parse_ucf101, "hmdb51": sp.parse_hmdb51, "kinetics": sp.parse_kinetics}
    classes, lists = parse[fmt](split_dir)
    parsed = {
        k: {c: n for c in classes if (n := [v.class_name for v in train].count(c))}
        for k, (train, _) in lists.items()
    }
    counted = sp.listed_train_counts(fmt, split_dir)
    assert {k: {c: n for c, n in v.items() if n} for k, v in counted.items()} == parsed


# ---- the CLI stages, on the lists they are given -------------------------------------------


@pytest.fixture
def lists(tiny_set):
    """tiny_set's 12 videos (10..19 frames, 3 classes) as train and test list of split 1."""
    root, frames, lists = tiny_set
    train = lists / "split1" / "train.csv"
    (lists / "split1" / "test.csv").write_bytes(train.read_bytes())
    (lists / "classes.csv").write_text("label,class\n0,c0\n1,c1\n2,c2\n")
    return root, frames, lists


def _settings(stage: str, **changes) -> str:
    section = "pretrain" if stage.startswith("pretrain") else "downstream"
    settings = copy.deepcopy(PARAMS[section])
    if section == "downstream":
        settings = {k: v for k, v in settings.items() if k not in ("datasets", "splits")}
    settings.update(clip_len=4, stride=2, crop_size=16, resize_short=18, batch_size=4,
                    labels_per_class=0, device="cpu", num_workers=0)  # fmt: skip
    if section == "pretrain":
        settings.update(queue_size=4)
        settings.pop("labels_per_class")
    settings.update(changes)
    if stage == "features":  # a features job is handed only the keys it uses
        settings = {k: v for k, v in settings.items() if k in FEATURE_SETTINGS}
    return json.dumps(settings)


# fault: (stage, setting changes, texts the one line must hold)
CLI_FAULTS = {
    "queue not smaller than the training set minus the batch": (
        "pretrain", {"queue_size": 8}, ["pretrain.queue_size: 8", "(12 - 4 = 8)"]
    ),
    "batch larger than the data set (pretrain)": (
        "pretrain supervised", {"batch_size": 13},  # (no queue to check first)
        ["pretrain.batch_size: 13", "12 training videos"],
    ),
    "batch larger than the labelled set (downstream)": (
        "finetune", {"batch_size": 7, "labels_per_class": 2},
        ["downstream.batch_size: 7", "6 labelled training videos", "allowed 1..6"],
    ),
    "clip longer than every video": (
        "pretrain", {"clip_len": 11, "stride": 2},  # spans 21 > 19 frames
        ["pretrain.clip_len: 11", "allowed pretrain.clip_len 1..10 at pretrain.stride 2"],
    ),
    "clip longer than every video (downstream)": (
        "features", {"clip_len": 20, "stride": 1},
        ["downstream.clip_len: 20", "allowed downstream.clip_len 1..19"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CLI_FAULTS))
def test_a_stage_refuses_what_its_lists_rule_out_in_one_line(lists, name, fault, capsys):
    fault("bad parameters", f"{name} (CLI)")
    root, frames, list_dir = lists
    stage, changes, texts = CLI_FAULTS[name]
    out = root / "out"
    common = ["--lists", str(list_dir), "--frames", str(frames), "--seed", "0", "--backbone",
              "small3d", "--dataset", "tiny"]  # fmt: skip
    common += ["--settings", _settings(stage, **changes)]
    argv = {
        "pretrain": ["pretrain", "--method", "vtdl", "--out", str(out), *common],
        "pretrain supervised": ["pretrain", "--method", "supervised", "--out", str(out), *common],
        "finetune": ["finetune", "--encoder", "none", "--split", "1",
                     "--out", str(out / "r.json"), *common],
        "features": ["features", "--encoder", "none", "--split", "1",
                     "--out", str(out / "f.npz"), *common],
    }[stage]  # fmt: skip
    status = cli.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1, (name, lines)
    for expected in texts:
        assert expected in lines[0], (expected, lines[0])
    assert not out.exists()
