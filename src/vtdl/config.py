"""Loading and validating params.yaml.

The JSON schema next to this module (params.schema.yaml, package data, so an installed vtdl
validates without the repository) is the single description of every key, with the choices of
methods and backbones filled in from `vtdl.names`; this module turns
its verdict into one line that names the offending key (`extract.short_side: -3 is less than
the minimum of 0`), and adds the cross-key checks a schema cannot express. The Snakefile calls
`validate_params` before any job runs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vtdl.errors import VtdlError
from vtdl.names import BACKBONES, SELF_SUPERVISED_METHODS

SCHEMA_PATH = Path(__file__).resolve().with_name("params.schema.yaml")


def load_yaml(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise VtdlError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise VtdlError(f"{path}: not valid YAML: {err}") from None


def load_schema(schema_path=SCHEMA_PATH) -> dict:
    """The params schema with the registry's choices filled in (one list of names to edit)."""
    schema = load_yaml(schema_path)
    pretrain = schema["properties"]["pretrain"]["properties"]
    pretrain["methods"]["items"]["enum"] = list(SELF_SUPERVISED_METHODS)
    pretrain["backbones"]["items"]["enum"] = list(BACKBONES)
    pretrain["backbone_options"]["propertyNames"]["enum"] = list(BACKBONES)
    return schema


def _key_path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def _check_against(schema: dict, value: Any, source: str, prefix: tuple) -> None:
    """Raise VtdlError naming the first key of `value` that `schema` rejects."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        where = _key_path((*prefix, *err.absolute_path))
        if err.validator == "additionalProperties":
            known = sorted(err.schema.get("properties", {}))
            hint = f" (known keys: {', '.join(known)})" if known else ""
            raise VtdlError(f"{source}: {where}: {err.message}{hint}")
        raise VtdlError(f"{source}: {where}: {err.message}")


def add_settings_argument(parser: argparse.ArgumentParser, section: str) -> None:
    """The `--settings` option of a stage that reads the `section` parameters."""
    parser.add_argument(
        "--settings",
        default="params.yaml",
        help=f"the `{section}` parameters: a params file or an inline JSON object",
    )


def load_settings(
    value: str,
    section: str,
    schema_path=SCHEMA_PATH,
    keys: tuple[str, ...] | None = None,
    optional: tuple[str, ...] = (),
) -> dict:
    """The `section` block of the parameters, for a stage's `--settings` option.

    `value` is either an inline JSON object (what Snakemake rules pass: the merged config,
    including any `--configfile` override, which a file on disk would not show) validated
    against that section's schema, or the path of a params file, validated as a whole.
    With `keys`, exactly those keys of the section are required and returned (a stage that
    uses only part of a section is handed only that part, so editing the rest does not re-run
    it); other keys are still rejected by name. Keys in `optional` may be left out of an
    inline object (a pretraining job is handed its section without the grid lists).
    """
    if value.lstrip().startswith("{"):
        try:
            settings = json.loads(value)
        except json.JSONDecodeError as err:
            raise VtdlError(f"--settings: not a valid JSON object: {err}") from None
        schema = load_schema(schema_path)
        subschema = {**schema["properties"][section], "$defs": schema.get("$defs", {})}
        if optional:
            subschema["required"] = [k for k in subschema["required"] if k not in optional]
        if keys is not None:
            subschema["required"] = list(keys)
            unused = sorted(set(settings) - set(keys))
            if unused:
                raise VtdlError(f"--settings: {section}: not used here: {', '.join(unused)}")
        _check_against(subschema, settings, "--settings", prefix=(section,))
        check_section(section, settings, "--settings")
        return settings
    config = load_yaml(value)
    if not isinstance(config, dict):
        raise VtdlError(f"{value}: expected a mapping of parameter sections")
    validate_params(config, source=str(value), schema_path=schema_path)
    return config[section]


def validate_params(config: dict, source: str = "params.yaml", schema_path=SCHEMA_PATH) -> None:
    """Raise VtdlError naming the first wrong key, type or range in `config`."""
    schema = load_schema(schema_path)
    _check_against(schema, config, source, prefix=())
    _check_datasets(config["datasets"], source)
    pretrain = config["pretrain"]
    if pretrain["dataset"] not in config["datasets"]:
        raise VtdlError(
            f"{source}: pretrain.dataset: {pretrain['dataset']!r} is not a data set in `datasets`"
            f" ({', '.join(config['datasets'])})"
        )
    for section in ("pretrain", "downstream"):
        check_section(section, config[section], source)


def check_section(section: str, settings: dict, source: str) -> None:
    """The cross-key checks of one section that the schema cannot express."""
    if {"resize_short", "crop_size"} <= set(settings) and (
        settings["resize_short"] < settings["crop_size"]
    ):
        raise VtdlError(
            f"{source}: {section}.resize_short ({settings['resize_short']}) is smaller than "
            f"{section}.crop_size ({settings['crop_size']}): the crop must fit the resized clip"
        )


def _check_datasets(datasets: dict, source: str) -> None:
    for name, ds in datasets.items():
        key = f"datasets.{name}"
        has_paths = "videos" in ds or "splits" in ds
        if "synth" in ds:
            if has_paths:
                raise VtdlError(
                    f"{source}: {key}: give either a `synth` block or `videos` + `splits`, not both"
                )
            synth = ds["synth"]
            if ds["format"] == "kinetics":
                raise VtdlError(f"{source}: {key}.format: synth data sets are ucf101 or hmdb51")
            if synth["frames_min"] > synth["frames_max"]:
                raise VtdlError(f"{source}: {key}.synth.frames_min is larger than frames_max")
            needed = (
                ("groups", "clips_per_group") if ds["format"] == "ucf101" else ("videos_per_class",)
            )
            for field in needed:
                if field not in synth:
                    raise VtdlError(f"{source}: {key}.synth.{field} is required for {ds['format']}")
        elif not ("videos" in ds and "splits" in ds):
            raise VtdlError(
                f"{source}: {key}: give `videos` and `splits` paths (or a `synth` block)"
            )


# ----------------------------------------------------------------------------------------------
# The configuration reference (docs/configuration.md), generated from the schema
# ----------------------------------------------------------------------------------------------


def schema_keys(schema: dict) -> list[tuple[str, dict]]:
    """Every property of the schema as (dotted key, its subschema), in schema order.

    A data set's keys read `datasets.<name>.…` and a backbone's options
    `pretrain.backbone_options.<name>`; `$ref`s into `$defs` are followed.
    """
    defs = schema.get("$defs", {})

    def resolve(node: dict) -> dict:
        ref = node.get("$ref", "")
        return {**defs[ref.rsplit("/", 1)[-1]], **node} if ref.startswith("#/$defs/") else node

    found: list[tuple[str, dict]] = []

    def visit(properties: dict, prefix: str) -> None:
        for name, node in properties.items():
            key, node = f"{prefix}{name}", resolve(node)
            found.append((key, node))
            if "properties" in node:
                visit(node["properties"], f"{key}.")
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                extra = resolve(extra)
                if "properties" in extra:
                    found.append((f"{key}.<name>", extra))
                    visit(extra["properties"], f"{key}.<name>.")

    visit(schema["properties"], "")
    return found


def _allowed(node: dict) -> str:
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    items = node.get("items", {})
    if "enum" in items:
        return "list of " + ", ".join(f"`{v}`" for v in items["enum"])
    bounds = [
        f"{sign} {node[word]}"
        for word, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                           ("exclusiveMaximum", "<"))
        if word in node
    ]  # fmt: skip
    kind = node.get("type", "")
    if kind == "array" and "type" in items:
        kind = f"list of {items['type']}"
    return " ".join([kind, ", ".join(bounds)]).strip()


def _default(params: dict, key: str) -> str:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    if isinstance(node, dict):
        return ""
    return f"`{json.dumps(node)}`"


def configuration_reference(params: dict, schema_path=SCHEMA_PATH) -> str:
    """Markdown: every params.yaml key with its type and range, its value in `params` (the
    shipped defaults) and its description from the schema."""
    lines = [
        "# Configuration reference",
        "",
        "Every key of `params.yaml`, generated from `src/vtdl/params.schema.yaml` (types, ranges",
        "and descriptions) and the shipped `params.yaml` (defaults) by",
        "`vtdl.config.configuration_reference` (`make docs` rewrites this file);",
        "`tests/test_config.py` fails when it is out of date or a key lacks a description.",
        "`<name>` stands for a data set name.",
        "",
        "| key | type / allowed | default | description |",
        "|---|---|---|---|",
    ]
    for key, node in schema_keys(load_schema(schema_path)):
        text = " ".join(str(node.get("description", "")).split()).replace("|", "\\|")
        lines.append(f"| `{key}` | {_allowed(node)} | {_default(params, key)} | {text} |")
    return "\n".join(lines) + "\n"
