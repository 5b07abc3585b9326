"""params.yaml validation: every wrong key, type or range is reported by name."""

import copy
from pathlib import Path

import pytest

from vtdl.config import load_yaml, validate_params
from vtdl.errors import VtdlError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params():
    return load_yaml(ROOT / "params.yaml")


def test_shipped_params_are_valid(params):
    validate_params(params)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["extract"].update(short_side=-3), "extract.short_side: -3 is less than"),
        (lambda c: c["extract"].update(shortside=3), "'shortside' was unexpected"),
        (lambda c: c["extract"].update(on_error="ignore"), "extract.on_error: 'ignore' is not"),
        (lambda c: c["splits"].update(on_missing=1), "splits.on_missing"),
        (lambda c: c.update(unknown_section={}), "'unknown_section' was unexpected"),
        (
            lambda c: c["datasets"]["synth_ucf"]["synth"].update(height="x"),
            "datasets.synth_ucf.synth.height: 'x' is not of type 'integer'",
        ),
        (
            lambda c: c["datasets"]["synth_ucf"]["synth"].update(height=47),
            "datasets.synth_ucf.synth.height: 47 is not a multiple of 2",
        ),
        (
            lambda c: c["datasets"]["synth_ucf"].update(format="ucf"),
            "datasets.synth_ucf.format: 'ucf' is not one of",
        ),
        (
            lambda c: c["datasets"]["synth_ucf"].update(videos="/data/UCF-101"),
            "datasets.synth_ucf: give either a `synth` block or `videos` + `splits`",
        ),
        (
            lambda c: c["datasets"].update(real={"format": "ucf101", "videos": "/v"}),
            "datasets.real: give `videos` and `splits`",
        ),
        (
            lambda c: c["datasets"]["synth_ucf"]["synth"].update(frames_min=60, frames_max=50),
            "datasets.synth_ucf.synth.frames_min is larger than frames_max",
        ),
        (
            lambda c: c["datasets"]["synth_ucf"]["synth"].pop("groups"),
            "datasets.synth_ucf.synth.groups is required for ucf101",
        ),
    ],
)
def test_bad_params_name_the_key(params, mutate, expected):
    bad = copy.deepcopy(params)
    mutate(bad)
    with pytest.raises(VtdlError, match="^params.yaml: ") as info:
        validate_params(bad)
    assert expected in str(info.value)


def test_real_dataset_entry_is_accepted(params):
    ok = copy.deepcopy(params)
    ok["datasets"]["ucf101"] = {
        "format": "ucf101",
        "videos": "/data/UCF-101",
        "splits": "/data/ucfTrainTestlist",
    }
    validate_params(ok)


def test_missing_or_broken_yaml(tmp_path):
    with pytest.raises(VtdlError, match="file not found"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(VtdlError, match="bad.yaml: not valid YAML"):
        load_yaml(bad)


def test_load_settings_reads_inline_json_and_names_the_bad_key():
    import json

    from vtdl.config import load_settings

    settings = load_settings(str(ROOT / "params.yaml"), "pretrain")
    assert load_settings(json.dumps(settings), "pretrain") == settings
    settings["tau"] = "warm"
    with pytest.raises(VtdlError, match=r"--settings: pretrain\.tau"):
        load_settings(json.dumps(settings), "pretrain")
    with pytest.raises(VtdlError, match="--settings: not a valid JSON"):
        load_settings("{oops", "pretrain")


def test_every_schema_key_has_a_description_and_the_reference_is_current():
    from vtdl.config import configuration_reference, load_schema, schema_keys

    keys = schema_keys(load_schema())
    assert len(keys) > 80
    undescribed = [key for key, node in keys if not str(node.get("description", "")).strip()]
    assert not undescribed, f"schema keys without a description: {undescribed}"
    expected = configuration_reference(load_yaml(ROOT / "params.yaml"))
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == expected, (
        "docs/configuration.md is out of date: regenerate it (see its first lines)"
    )
