"""Optimiser construction and learning-rate schedules shared by pretraining and fine-tuning."""

from __future__ import annotations

import pytest
import torch

from vtdl.errors import VtdlError
from vtdl.runtime import build_optimizer, lr_at, set_lr


def _settings(name):
    return {"optimizer": name, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}


def test_sgd_and_adam_from_settings_with_scaled_groups():
    backbone, head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    groups = [
        {"params": list(backbone.parameters()), "lr_scale": 0.3},
        {"params": list(head.parameters()), "lr_scale": 1.0},
    ]
    sgd = build_optimizer(groups, _settings("sgd"))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["weight_decay"] == 1e-4
    set_lr(sgd, 0.01)
    assert [g["lr"] for g in sgd.param_groups] == pytest.approx([0.003, 0.01])
    adam = build_optimizer(list(head.parameters()), _settings("adam"))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 0.1


def test_lr_schedules():
    assert lr_at(0, 1.0, "multistep", 10, milestones=[3, 6], gamma=0.1) == 1.0
    assert lr_at(6, 1.0, "multistep", 10, milestones=[3, 6], gamma=0.1) == pytest.approx(0.01)
    assert lr_at(5, 1.0, "cosine", 10) == pytest.approx(0.5)
    assert lr_at(0, 1.0, "constant", 10, warmup_epochs=4) == pytest.approx(0.25)
    with pytest.raises(VtdlError, match="lr_schedule"):
        lr_at(0, 1.0, "step", 10)
