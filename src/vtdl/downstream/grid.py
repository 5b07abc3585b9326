"""The downstream job grid as downstream.smk sees it: targets, per-protocol settings, options.

Pure functions of the (merged) Snakemake config, kept out of the rule file so they are
tested like the rest of the package and the rule file holds only rules.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from vtdl.downstream.job import FEATURE_SETTINGS, SECTIONS
from vtdl.errors import VtdlError
from vtdl.names import ENCODER, FEATURES, PROTOCOLS, RESULT, SCRATCH, SUPERVISED


def methods(config: dict) -> list[str]:
    """Rows of the ablation: scratch, every pretraining method, and the supervised reference."""
    return [SCRATCH, *config["pretrain"]["methods"], SUPERVISED]


def check(config: dict) -> None:
    """Raise VtdlError for what the schema cannot say: the grid exists and names known sets."""
    downstream = config["downstream"]
    for key in ("datasets", "splits", *SECTIONS):
        if key not in downstream:
            raise VtdlError(f"params: downstream.{key} is required")
    for ds in downstream["datasets"]:
        if ds not in config["datasets"]:
            raise VtdlError(
                f"params: downstream.datasets: {ds!r} is not a data set in `datasets`"
                f" ({', '.join(config['datasets'])})"
            )


def targets(config: dict, protocols: tuple[str, ...] = tuple(PROTOCOLS)) -> list[str]:
    """Every result JSON: protocols x data sets x splits x methods x backbones x seeds."""
    downstream, pretrain = config["downstream"], config["pretrain"]
    return [
        RESULT.format(protocol=p, ds=ds, split=k, method=m, backbone=b, seed=s)
        for p in protocols
        for ds in downstream["datasets"]
        for k in downstream["splits"]
        for m in methods(config)
        for b in pretrain["backbones"]
        for s in pretrain["seeds"]
    ]


def settings_json(config: dict, protocol: str) -> str:
    """The `downstream` section as one protocol's (or the features') jobs see it, as JSON.

    The grid (datasets, splits) and the other protocols' sections are left out: Snakemake
    re-runs a job when its params change, and editing them must not re-run jobs that do not
    use them (adding a data set must not re-run every fine-tune).
    """
    if protocol not in (*PROTOCOLS, FEATURES):
        raise ValueError(f"unknown protocol {protocol!r}")
    section = config["downstream"]
    if protocol == FEATURES:
        return json.dumps({k: section[k] for k in FEATURE_SETTINGS}, sort_keys=True)
    drop = {"datasets", "splits", *(s for s in SECTIONS if s != protocol)}
    return json.dumps({k: v for k, v in section.items() if k not in drop}, sort_keys=True)


def encoder_path(config: dict, method: str, backbone: str, seed: Any) -> str | None:
    """The pretrained encoder a job starts from; None for scratch."""
    if method == SCRATCH:
        return None
    return ENCODER.format(
        ds=config["pretrain"]["dataset"], method=method, backbone=backbone, seed=seed
    )


def command_options(config: dict, wildcards: Any) -> str:
    """The shell-quoted options every downstream stage gets for one job (wildcards of a rule)."""
    w = wildcards
    encoder = encoder_path(config, w.method, w.backbone, w.seed) or "none"
    backbone_options = config["pretrain"].get("backbone_options", {}).get(w.backbone, {})
    options = {
        "--encoder": encoder,
        "--backbone": w.backbone,
        "--backbone-options": json.dumps(backbone_options, sort_keys=True),
        "--method": w.method,
        "--seed": w.seed,
        "--dataset": w.ds,
        "--split": w.split,
        "--lists": f"data/splits/{w.ds}",
        "--frames": f"data/frames/{w.ds}",
        "--pretrain-dataset": config["pretrain"]["dataset"],
    }
    if w.method == SCRATCH:
        del options["--pretrain-dataset"]  # no pretraining involved
    return " ".join(f"{k} {shlex.quote(str(v))}" for k, v in options.items())
