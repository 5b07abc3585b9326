"""Bad parameters: refused before any job runs, naming the key (Snakemake and the CLI alike).

Through Snakemake: the shipped params.yaml with one value broken, a dry run of the whole
pipeline in an empty folder must fail before any job (no data/, no logs/) with the key named
and, where the schema has them, the allowed values. Through the CLI: the same values given to
a stage's `--settings` give one line naming the key.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from refused_run import refused_dry_run

from vtdl.config import load_yaml

ROOT = Path(__file__).resolve().parents[2]
VTDL = Path(sys.executable).with_name("vtdl")
PARAMS = load_yaml(ROOT / "params.yaml")


def _set(path: str, value):
    def mutate(params):
        *parents, leaf = path.split(".")
        node = params
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[leaf]
        else:
            node[leaf] = value

    return mutate


_DELETE = object()
# fault: (mutation, texts the error must contain)
FAULTS = {
    "wrong type": (_set("pretrain.epochs", "many"), ["pretrain.epochs", "integer"]),
    "unknown key": (_set("pretrain.learning_rate", 0.1), ["pretrain", "learning_rate", "lr"]),
    "zero learning rate": (_set("pretrain.lr", 0), ["pretrain.lr"]),
    "negative learning rate": (_set("downstream.finetune.lr", -0.1), ["downstream.finetune.lr"]),
    "resize_short < crop_size (pretrain)": (
        _set("pretrain.resize_short", 16), ["pretrain.resize_short", "crop_size"]
    ),
    "resize_short < crop_size (downstream)": (
        _set("downstream.resize_short", 16), ["downstream.resize_short", "crop_size"]
    ),
    "missing data path": (
        lambda p: p["datasets"].update(real={"format": "ucf101", "videos": "/no/such/videos",
                                             "splits": "/no/such/splits"}),
        ["datasets.real.videos", "/no/such/videos"],
    ),
    "unknown backbone": (_set("pretrain.backbones", ["resnet9000"]), ["resnet9000", "small3d"]),
    "unknown method": (_set("pretrain.methods", ["simclr"]), ["simclr", "moco_td"]),
    "missing section key": (_set("pretrain.tau", _DELETE), ["pretrain", "tau"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_snakemake_refuses_a_bad_parameter_before_any_job(tmp_path, name, fault):
    fault("bad parameters", f"{name} (Snakemake)")
    mutate, texts = FAULTS[name]
    params = copy.deepcopy(PARAMS)
    mutate(params)
    text = refused_dry_run(tmp_path, params)
    for expected in texts:
        assert expected in text, (expected, text[-2000:])


# The same faults through a stage's --settings (inline JSON, as the rules pass it).
CLI = {
    "wrong type": ("pretrain", _set("epochs", "many"), "pretrain.epochs"),
    "unknown key": ("pretrain", _set("learning_rate", 0.1), "learning_rate"),
    "zero learning rate": ("pretrain", _set("lr", 0), "pretrain.lr"),
    "resize_short < crop_size (pretrain)": ("pretrain", _set("resize_short", 16), "resize_short"),
    "resize_short < crop_size (downstream)": ("linear", _set("resize_short", 16),
                                              "resize_short"),
    "unknown backbone": ("pretrain", _set("backbones", ["resnet9000"]), "resnet9000"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CLI))
def test_a_stage_refuses_a_bad_setting_in_one_line(tmp_path, name, fault):
    fault("bad parameters", f"{name} (CLI)")
    stage, mutate, expected = CLI[name]
    section = "pretrain" if stage == "pretrain" else "downstream"
    settings = copy.deepcopy(PARAMS[section])
    if section == "downstream":
        settings = {
            k: v for k, v in settings.items() if k not in ("datasets", "splits", "finetune")
        }
    mutate(settings)
    argv = {
        "pretrain": ["--method", "vtdl", "--backbone", "small3d", "--seed", "0", "--dataset",
                     "d", "--lists", "l", "--frames", "f", "--out", "o"],
        "linear": ["--features", "f.npz", "--out", "o.json"],
    }[stage]  # fmt: skip
    result = subprocess.run(
        [str(VTDL), stage, *argv, "--settings", json.dumps(settings)], cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert expected in lines[0] and "Traceback" not in result.stderr, lines
    assert list(tmp_path.iterdir()) == []  # nothing written
