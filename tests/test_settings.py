"""Typed settings: one class per params section, equal to the schema, read by attribute."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from vtdl.config import load_schema, load_settings, load_yaml
from vtdl.errors import VtdlError
from vtdl.runtime import set_lr
from vtdl.settings import (
    PRETRAIN_GRID,
    DownstreamSettings,
    FinetuneSettings,
    LinearSettings,
    PretrainSettings,
    Recipe,
)

ROOT = Path(__file__).resolve().parents[1]


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize(
    "path, cls",
    [
        (("pretrain",), PretrainSettings),
        (("downstream",), DownstreamSettings),
        (("downstream", "finetune"), FinetuneSettings),
        (("downstream", "linear"), LinearSettings),
    ],
)
def test_each_class_has_exactly_its_schema_sections_keys(path, cls):
    node = load_schema()
    for part in path:
        node = node["properties"][part]
    assert _fields(cls) == set(node["properties"])
    # A key the schema requires has no default here: a section without it is refused.
    required_without_default = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required_without_default <= set(node.get("required", []))


def test_the_shipped_sections_round_trip_and_are_read_by_attribute():
    params = load_yaml(ROOT / "params.yaml")
    pretrain = PretrainSettings.from_section(params["pretrain"])
    assert pretrain.batch_size == params["pretrain"]["batch_size"]
    assert pretrain.options_of("small3d") == params["pretrain"]["backbone_options"]["small3d"]
    assert pretrain.options_of("i3d") == {}
    shipped = {"augment_on": "auto", **params["pretrain"]}
    assert pretrain.as_dict() == shipped
    downstream = DownstreamSettings.from_section(params["downstream"])
    assert isinstance(downstream.finetune, FinetuneSettings)
    assert downstream.linear.max_iter == params["downstream"]["linear"]["max_iter"]
    assert downstream.as_dict() == params["downstream"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        pretrain.lr = 1.0


def test_a_stage_given_inline_json_gets_the_same_object():
    params = load_yaml(ROOT / "params.yaml")
    inline = load_settings(json.dumps(params["pretrain"]), "pretrain")
    from_file = load_settings(str(ROOT / "params.yaml"), "pretrain")
    assert PretrainSettings.from_section(inline) == PretrainSettings.from_section(from_file)


def test_a_pretraining_job_sees_neither_the_grid_nor_other_backbones_options():
    section = load_yaml(ROOT / "params.yaml")["pretrain"]
    job = PretrainSettings.from_section(section).for_job("small3d")
    assert set(job.as_dict()) == (set(section) - set(PRETRAIN_GRID)) | {"augment_on"}
    assert job.options_of("small3d") == section["backbone_options"]["small3d"]
    grown = {
        **section,
        "methods": ["moco", "moco_td", "vtdl"],
        "backbones": ["small3d", "c3d"],
        "seeds": [0, 1, 2, 3],
        "backbone_options": {**section["backbone_options"], "c3d": {"batch_norm": False}},
    }
    assert PretrainSettings.from_section(grown).for_job("small3d") == job
    assert PretrainSettings.from_section({**section, "lr": 0.5}).for_job("small3d") != job
    # `vtdl pretrain --settings` takes the job's view too (what the rule passes); a recipe key
    # missing from it is still named.
    view = json.dumps(job.as_dict())
    inline = load_settings(view, "pretrain", optional=PRETRAIN_GRID)
    assert PretrainSettings.from_section(inline).for_job("small3d") == job
    without_lr = json.dumps({k: v for k, v in job.as_dict().items() if k != "lr"})
    with pytest.raises(VtdlError, match="lr"):
        load_settings(without_lr, "pretrain", optional=PRETRAIN_GRID)
    with pytest.raises(VtdlError, match="methods"):  # elsewhere the grid is required
        load_settings(view, "pretrain")


def test_an_unknown_or_missing_key_is_named():
    section = load_yaml(ROOT / "params.yaml")["downstream"]["linear"]
    with pytest.raises(VtdlError, match="unknown settings max_iters"):
        LinearSettings.from_section({**section, "max_iters": 3})
    with pytest.raises(VtdlError, match="missing settings max_iter"):
        LinearSettings.from_section({"weight_decay": 0.1})


def _recipe(**changes) -> Recipe:
    base = dict(
        optimizer="sgd",
        lr=1.0,
        momentum=0.9,
        weight_decay=1e-4,
        lr_schedule="constant",
        milestones=[],
        lr_gamma=0.1,
        warmup_epochs=0,
        epochs=10,
        checkpoint_every=4,
    )
    return Recipe(**{**base, **changes})


def test_lr_schedules():
    steps = _recipe(lr_schedule="multistep", milestones=[3, 6])
    assert steps.lr_at(0) == 1.0
    assert steps.lr_at(3) == pytest.approx(0.1)
    assert steps.lr_at(6) == pytest.approx(0.01)
    assert _recipe(lr_schedule="cosine").lr_at(5) == pytest.approx(0.5)
    assert _recipe(lr_schedule="cosine").lr_at(0) == 1.0
    assert _recipe(warmup_epochs=4).lr_at(0) == pytest.approx(0.25)
    with pytest.raises(VtdlError, match="lr_schedule"):
        _recipe(lr_schedule="step").lr_at(0)


def test_checkpoints_fall_every_n_epochs_and_after_the_last():
    recipe = _recipe(epochs=10, checkpoint_every=4)
    assert [e for e in range(1, 11) if recipe.checkpoint_due(e)] == [4, 8, 10]


def test_sgd_and_adam_with_scaled_groups():
    backbone, head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    groups = [
        {"params": list(backbone.parameters()), "lr_scale": 0.3},
        {"params": list(head.parameters()), "lr_scale": 1.0},
    ]
    sgd = _recipe(lr=0.1).build_optimizer(groups)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["weight_decay"] == 1e-4
    set_lr(sgd, 0.01)
    assert [g["lr"] for g in sgd.param_groups] == pytest.approx([0.003, 0.01])
    adam = _recipe(optimizer="adam", lr=0.1).build_optimizer(list(head.parameters()))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 0.1
