"""Reading the runs a report needs out of the MLflow store, and nothing else.

The report must be rebuildable from the store alone (after `dvc pull` of `mlflow.db` and
`mlartifacts/`), so this module never looks at `results/*.json`. Two rules keep the numbers
honest:

- only FINISHED runs count (a crashed or killed job reports nothing);
- for each job identity (stage, method, backbone, dataset, split, seed, and the pretraining set
  of a pretrained encoder) only the latest run counts, so a re-run replaces the old numbers
  instead of being averaged with them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from vtdl import tracking
from vtdl.errors import VtdlError
from vtdl.names import (
    CLASSIFICATION_METRICS,
    PRETRAIN,
    PROTOCOLS,
    SCRATCH,
    is_final_metric,
    metric_prefix,
    parse_clip_metric,
    parse_recall_metric,
)

log = logging.getLogger(__name__)

DOWNSTREAM_PROTOCOLS = tuple(PROTOCOLS)
PRETRAIN_STAGE = PRETRAIN
# Pretext diagnostics read from the per-epoch means `pretrain/epoch/<name>` (last epoch).
PRETEXT_METRICS = ("instance_acc", "pos_beats_neg", "loss", "train_top1")

_REQUIRED_TAGS = ("method", "backbone", "dataset", "split", "seed")


@dataclass(frozen=True)
class DownstreamRun:
    """One finished downstream job: its identity and its final metrics (short names)."""

    protocol: str
    method: str
    backbone: str
    dataset: str
    split: int
    seed: int
    pretrain_dataset: str | None  # None for scratch: it belongs to every pretraining set
    run_id: str
    artifact_uri: str
    metrics: dict[str, float] = field(default_factory=dict)  # "top1_10clip", "recall_at_1", ...


@dataclass(frozen=True)
class PretrainRun:
    """One finished pretraining job and its last-epoch pretext diagnostics."""

    method: str
    backbone: str
    dataset: str
    split: int
    seed: int
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)  # PRETEXT_METRICS present


@dataclass(frozen=True)
class Store:
    """Everything the report uses, already filtered and de-duplicated, in a fixed order."""

    uri: str
    experiment: str
    downstream: tuple[DownstreamRun, ...]
    pretrain: tuple[PretrainRun, ...]


def metric_sort_key(name: str) -> tuple:
    """Canonical column order: 1-clip before N-clip, top1/top5/meanclass, then R@k by k."""
    clip = parse_clip_metric(name)
    if clip:
        kind, clips = clip
        return (0, clips, CLASSIFICATION_METRICS.index(kind))
    k = parse_recall_metric(name)
    if k is not None:
        return (1, k, 0)
    return (2, 0, name)


def clip_counts(runs: Iterable[DownstreamRun]) -> list[int]:
    """Every multi-clip count N (N > 1) that some run reports as `top1_<N>clip`, ascending."""
    found = set()
    for run in runs:
        for name in run.metrics:
            clip = parse_clip_metric(name)
            if clip and clip[1] > 1:
                found.add(clip[1])
    return sorted(found)


def _int_tag(run: dict[str, Any], key: str) -> int | None:
    value = run["tags"].get(key)
    try:
        return int(str(value))
    except (TypeError, ValueError):
        log.warning(
            "MLflow run %s: tag %s=%r is not an integer; run ignored", run["run_id"], key, value
        )
        return None


def _identity(run: dict[str, Any]) -> dict[str, Any] | None:
    """The job identity of a run from its tags, or None (with a warning) if a tag is missing."""
    tags = run["tags"]
    missing = [key for key in _REQUIRED_TAGS if not tags.get(key)]
    if missing:
        log.warning(
            "MLflow run %s (stage %s) lacks tag(s) %s; run ignored",
            run["run_id"],
            tags.get("stage"),
            ", ".join(missing),
        )
        return None
    split, seed = _int_tag(run, "split"), _int_tag(run, "seed")
    if split is None or seed is None:
        return None
    return {
        "method": tags["method"],
        "backbone": tags["backbone"],
        "dataset": tags["dataset"],
        "split": split,
        "seed": seed,
    }


def _latest(runs: list[dict[str, Any]], key_of) -> list[tuple[tuple, dict[str, Any]]]:
    """The latest run per identity key (by start time, then end time, then run id), key-sorted."""
    ordered = sorted(runs, key=lambda r: (r["start_time"] or 0, r["end_time"] or 0, r["run_id"]))
    latest: dict[tuple, dict[str, Any]] = {}
    for run in ordered:
        key = key_of(run)
        if key is not None:
            latest[key] = run
    return sorted(latest.items(), key=lambda item: tuple(str(part) for part in item[0]))


def _downstream(run: dict[str, Any], ident: dict[str, Any]) -> DownstreamRun:
    protocol = run["tags"]["stage"]
    prefix = metric_prefix(ident["dataset"], ident["split"], protocol) + "/"
    metrics = {
        name[len(prefix) :]: float(value)
        for name, value in run["metrics"].items()
        if name.startswith(prefix) and is_final_metric(name[len(prefix) :])
    }
    pretrain_dataset = None
    if ident["method"] != SCRATCH:
        pretrain_dataset = run["tags"].get("pretrain_dataset") or None
    return DownstreamRun(
        protocol=protocol,
        pretrain_dataset=pretrain_dataset,
        run_id=run["run_id"],
        artifact_uri=run["artifact_uri"] or "",
        metrics=dict(sorted(metrics.items(), key=lambda kv: metric_sort_key(kv[0]))),
        **ident,
    )


def _pretrain(run: dict[str, Any], ident: dict[str, Any]) -> PretrainRun:
    metrics = {
        name: float(run["metrics"][f"pretrain/epoch/{name}"])
        for name in PRETEXT_METRICS
        if f"pretrain/epoch/{name}" in run["metrics"]
    }
    return PretrainRun(run_id=run["run_id"], metrics=metrics, **ident)


def describe_filter(
    backbone: str | None, pretrain_dataset: str | None, seeds: Collection[int] | None = None
) -> str:
    parts = ["status FINISHED", f"stage in {{{', '.join(DOWNSTREAM_PROTOCOLS)}}}"]
    if backbone:
        parts.append(f"backbone={backbone}")
    if seeds is not None:
        parts.append(f"seed in {{{', '.join(str(s) for s in sorted(seeds))}}}")
    if pretrain_dataset:
        parts.append(f"pretrain_dataset={pretrain_dataset} (scratch runs always kept)")
    return ", ".join(parts)


def load_store(
    backbone: str | None = None,
    pretrain_dataset: str | None = None,
    experiment: str | None = None,
    seeds: Collection[int] | None = None,
) -> Store:
    """The finished, latest runs of the store in effect (`MLFLOW_TRACKING_URI`), filtered.

    `backbone` keeps only runs of that backbone; `pretrain_dataset` keeps downstream runs of
    encoders pretrained on that set (plus scratch, which has no pretraining) and pretraining
    runs on that set. `seeds` keeps only runs of those seeds (the configured grid: runs of
    seeds since dropped from it do not enter the means).

    Raises:
        VtdlError: the store has no finished downstream run matching the filter (the message
            names the store and the filter), or the store cannot be opened.
    """
    uri = tracking.redact(tracking.tracking_uri())  # a server URI may carry a password
    name = tracking.experiment_name(experiment)
    database = tracking.sqlite_path(tracking.tracking_uri())
    if database is not None and not database.exists():
        # Opening it would create an empty store: say what is missing instead.
        raise VtdlError(
            f"MLflow store {uri!r}: database file {str(database)!r} does not exist, so it has no "
            f"runs matching {describe_filter(backbone, pretrain_dataset, seeds)}; run the pipeline "
            "first (or `dvc pull` the store), or point MLFLOW_TRACKING_URI at it"
        )
    runs = tracking.find_runs("attributes.status = 'FINISHED'", experiment=experiment)

    def keep(ident: dict[str, Any]) -> bool:
        return (backbone is None or ident["backbone"] == backbone) and (
            seeds is None or ident["seed"] in seeds
        )

    def downstream_key(run: dict[str, Any]) -> tuple | None:
        if run["tags"].get("stage") not in DOWNSTREAM_PROTOCOLS:
            return None
        ident = _identity(run)
        if ident is None or not keep(ident):
            return None
        pds = "" if ident["method"] == SCRATCH else run["tags"].get("pretrain_dataset", "")
        if pretrain_dataset is not None and ident["method"] != SCRATCH and pds != pretrain_dataset:
            return None
        return (run["tags"]["stage"], *ident.values(), pds)

    def pretrain_key(run: dict[str, Any]) -> tuple | None:
        if run["tags"].get("stage") != PRETRAIN_STAGE:
            return None
        ident = _identity(run)
        if ident is None or not keep(ident):
            return None
        if pretrain_dataset is not None and ident["dataset"] != pretrain_dataset:
            return None
        return (PRETRAIN_STAGE, *ident.values())

    downstream = tuple(_downstream(run, _identity(run)) for _, run in _latest(runs, downstream_key))
    pretrained = [run for run in downstream if run.method != SCRATCH]
    if not downstream or (pretrain_dataset is not None and not pretrained):
        raise VtdlError(
            f"MLflow store {uri!r} (experiment {name!r}) has no downstream runs matching "
            f"{describe_filter(backbone, pretrain_dataset, seeds)}; run the finetune/linear/"
            "retrieval stages first, or point MLFLOW_TRACKING_URI at the store that has them"
        )
    pretrain = tuple(_pretrain(run, _identity(run)) for _, run in _latest(runs, pretrain_key))
    return Store(uri=uri, experiment=name, downstream=downstream, pretrain=pretrain)
