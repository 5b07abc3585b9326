"""What is known of a data set's size before any job runs, and the parameters it rules out.

The Snakefile calls `check_data_params` while it builds the job graph, so a parameter that
cannot work on the configured data (a MoCo queue as large as the training set, a batch larger
than it, a clip longer than every video) stops the run before any job, naming the key and the
range it allows. What can be known at that point:

- an embedded (`synth`) set: everything. Its videos per class and split follow from its
  parameters (the arithmetic `vtdl synth` lays the split files out with), and `frames_max`
  bounds every video's length.
- a downloaded set: the training videos each class has in the official split files, read here
  (they are small text files). Videos later found missing or unreadable only shrink the set, so
  a limit the listed count already breaks is broken for sure. Frame counts are unknown until
  extraction, so the clip length is checked by the jobs when they start (as is everything here,
  again, on the lists actually written). Split files that cannot be read are left to the
  `splits` job, which names the file and line.

Nothing heavy is imported (no torch, no MLflow): this runs on every `snakemake` start.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from vtdl.data.limits import check_clip_fits
from vtdl.errors import VtdlError


@dataclass(frozen=True)
class TrainSet:
    """The training videos of one data set and split, as far as they are known now."""

    name: str  # how messages call it: "synth_ucf split 1"
    per_class: dict[str, int]  # training videos per class (an upper bound for downloads)
    frames_max: int | None  # the longest video's frames; None while unknown
    frames_key: str = ""  # the parameter that sets frames_max, for messages

    @property
    def videos(self) -> int:
        return sum(self.per_class.values())

    def labelled(self, labels_per_class: int) -> int:
        """Videos the labelled subset holds (`downstream.labels_per_class`; 0: all)."""
        if labels_per_class == 0:
            return self.videos
        return sum(min(n, labels_per_class) for n in self.per_class.values())


def _synth_set(ds: str, spec: dict, split: int) -> TrainSet:
    from vtdl.data.synth import class_names, hmdb_split_counts, ucf_test_groups

    synth = spec["synth"]
    classes = class_names(spec["format"])[: synth["num_classes"]]
    if spec["format"] == "ucf101":
        groups = synth["groups"]
        train = (groups - len(ucf_test_groups(groups, split))) * synth["clips_per_group"]
    else:
        train = hmdb_split_counts(synth["videos_per_class"])[0]
    return TrainSet(
        f"{ds} split {split}",
        dict.fromkeys(classes, train),
        synth["frames_max"],
        f"datasets.{ds}.synth.frames_max",
    )


def _listed_sets(fmt: str, splits_dir: Path) -> dict[int, dict[str, int]] | None:
    """Training videos per class of every split the official files define; None when they
    cannot be read (the `splits` job reports why)."""
    from vtdl.data.splits import listed_train_counts

    try:
        return listed_train_counts(fmt, splits_dir) or None
    except (VtdlError, OSError, UnicodeDecodeError, csv.Error):
        return None


class _Sizes:
    """Training sets of the configured data sets, each read at most once."""

    def __init__(self, datasets: dict) -> None:
        self.datasets = datasets
        self._listed: dict[str, dict[int, dict[str, int]] | None] = {}

    def train_set(self, ds: str, split: int, key: str) -> TrainSet | None:
        """The training set of `ds` split `split`; None when its size is unknown now. Raises
        VtdlError (naming `key`, the parameter that asked for it) for a split the set lacks."""
        spec = self.datasets.get(ds)
        if spec is None:
            return None  # named by the checks of the data set keys
        if "synth" in spec:
            return _synth_set(ds, spec, split)
        if ds not in self._listed:
            self._listed[ds] = _listed_sets(spec["format"], Path(spec["splits"]))
        listed = self._listed[ds]
        if listed is None:
            return None
        if split not in listed:
            raise VtdlError(
                f"{key}: {ds} has no split {split} (its split files in {spec['splits']} "
                f"define split(s) {', '.join(map(str, sorted(listed)))})"
            )
        return TrainSet(f"{ds} split {split}", listed[split], None)


def _check_clip(section: str, settings: dict, train: TrainSet, source: str) -> None:
    if train.frames_max is None:
        return
    where = f"{train.name} ({train.frames_key})"
    try:
        check_clip_fits(
            [train.frames_max], settings["clip_len"], settings["stride"], section, where
        )
    except VtdlError as err:
        raise VtdlError(f"{source}: {err}") from None


def check_pretrain(pretrain: dict, train: TrainSet, source: str) -> None:
    """Raise VtdlError naming the `pretrain` key that the training set rules out."""
    batch, accum, queue = pretrain["batch_size"], pretrain["grad_accum"], pretrain["queue_size"]
    n = train.videos
    if batch > n:
        raise VtdlError(
            f"{source}: pretrain.batch_size: {batch} is more than the {n} training videos of "
            f"{train.name}: allowed 1..{n}"
        )
    # One optimizer step enqueues the keys of all its micro-batches (vtdl.pretext).
    limit = n - batch * accum
    if pretrain["methods"] and queue >= limit:
        allowed = (
            f"allowed 1..{limit - 1}"
            if limit > 1
            else f"no queue fits: lower pretrain.batch_size x grad_accum below {n - 1}"
        )
        raise VtdlError(
            f"{source}: pretrain.queue_size: {queue} must be below the {n} training videos of "
            f"{train.name} minus the batch ({batch} x grad_accum {accum}), or a video is its own "
            f"negative: {allowed}"
        )
    _check_clip("pretrain", pretrain, train, source)


def check_downstream(downstream: dict, train: TrainSet, source: str) -> None:
    """Raise VtdlError naming the `downstream` key that the training set rules out."""
    per_class = downstream["labels_per_class"]
    labelled = train.labelled(per_class)
    if downstream["batch_size"] > labelled:
        which = (
            f"labelled training videos (downstream.labels_per_class {per_class})"
            if per_class
            else "training videos"
        )
        raise VtdlError(
            f"{source}: downstream.batch_size: {downstream['batch_size']} is more than the "
            f"{labelled} {which} of {train.name}: allowed 1..{labelled}"
        )
    _check_clip("downstream", downstream, train, source)


def check_data_params(config: dict, source: str = "params") -> None:
    """Raise VtdlError for a `pretrain` or `downstream` value the configured data rules out.

    Expects a config that passed `vtdl.config.validate_params`; data sets whose size cannot
    be known yet are skipped (their jobs check when they start).
    """
    sizes = _Sizes(config["datasets"])
    pretrain = config["pretrain"]
    train = sizes.train_set(pretrain["dataset"], pretrain["split"], f"{source}: pretrain.split")
    if train is not None:
        check_pretrain(pretrain, train, source)
    downstream = config["downstream"]
    for ds in downstream.get("datasets", []):
        for split in downstream.get("splits", []):
            train = sizes.train_set(ds, split, f"{source}: downstream.splits")
            if train is not None:
                check_downstream(downstream, train, source)
