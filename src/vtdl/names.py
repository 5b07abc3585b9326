"""The project's vocabulary, in one place: methods, protocols, backbones, metric names, paths.

Everything that names a method, a protocol or a result file imports it: the stages, the report,
the DVC bridge and the Snakemake rule files (which build their wildcard regexes from it). It
imports nothing heavy on purpose: Snakemake reads it every time it builds the job graph, and
a no-op re-run must not pay for torch.

Adding a pretraining method is one entry in `METHODS` plus its model code (see the README's
"How to add a method"): the params schema's choices, the CLI's choices, the rules' wildcard
regexes, the job grid and the report's rows all follow from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# What a method's row of the ablation is.
BASELINE = "baseline"  # no pretraining: the backbone freshly initialised
SELF_SUPERVISED = "self-supervised"  # pretrained on the pretext task, without labels
REFERENCE = "reference"  # pretrained with every label: the upper bound


@dataclass(frozen=True)
class Method:
    """One row of the ablation (docs/method.md §8)."""

    kind: str  # BASELINE | SELF_SUPERVISED | REFERENCE
    label: str  # the row's label in the tables
    summary: str
    # Self-supervised methods only: what they add to plain MoCo.
    temporal_negative: bool = False  # q.n, the same video at another time, as a negative
    tca: bool = False  # temporal consistent augmentation of the anchor batch
    # The rows the report subtracts from this one (paired by seed), e.g. vtdl - moco_td.
    compare_to: tuple[str, ...] = ()


SCRATCH = "scratch"
SUPERVISED = "supervised"

# In the ablation's row order: the table reads top to bottom as one addition per row.
METHODS: dict[str, Method] = {
    SCRATCH: Method(BASELINE, "scratch", "no pretraining: the freshly initialised backbone"),
    "moco": Method(
        SELF_SUPERVISED,
        "+basic augmentation (moco)",
        "instance discrimination: anchor vs its positive and the queue",
        compare_to=(SCRATCH,),
    ),
    "moco_td": Method(
        SELF_SUPERVISED,
        "+temporal negative (moco_td)",
        "moco + the temporal negative (same video, other time)",
        temporal_negative=True,
        compare_to=(SCRATCH, "moco"),
    ),
    "vtdl": Method(
        SELF_SUPERVISED,
        "+TCA (vtdl)",
        "moco_td + temporal consistent augmentation of the anchor (full VTDL)",
        temporal_negative=True,
        tca=True,
        compare_to=(SCRATCH, "moco", "moco_td"),
    ),
    SUPERVISED: Method(
        REFERENCE,
        "supervised (reference, all labels)",
        "cross-entropy on every label of the pretraining list",
        compare_to=(SCRATCH,),
    ),
}
# The methods `pretrain.methods` may list, and those with an encoder to train.
SELF_SUPERVISED_METHODS = tuple(n for n, m in METHODS.items() if m.kind == SELF_SUPERVISED)
PRETRAINED_METHODS = tuple(n for n, m in METHODS.items() if m.kind != BASELINE)

# Downstream protocols, in the tables' column order, with their labels.
PROTOCOLS: dict[str, str] = {
    "finetune": "fine-tune",
    "linear": "linear probe",
    "retrieval": "retrieval",
}
# The job that encodes the test (and training) videos once for `linear` and `retrieval`.
FEATURES = "features"
PRETRAIN = "pretrain"

# Backbone names (their constructors live in vtdl.models, which imports torch).
BACKBONES = ("small3d", "i3d", "r3d_18", "r2plus1d_18", "mc3_18", "c3d")


def regex(names) -> str:
    """A Snakemake wildcard regex matching exactly one of `names`."""
    return "|".join(re.escape(n) for n in names)


# ---- canonical split lists, written by `vtdl splits` under data/splits/<dataset>/ and read by
# every stage that trains or evaluates: classes.csv, split<k>/train.csv and split<k>/test.csv.
CLASSES_FILE = "classes.csv"
CLASSES_HEADER = ("label", "class")  # 0-based label, class name; sorted by label
LIST_HEADER = ("path", "label", "class", "frames")  # video relative to the data root; sorted
LIST_PARTS = ("train", "test")
DROPPED_FILE = "dropped.csv"  # listed videos left out (--on-missing skip), with the reason
DROPPED_HEADER = ("path", "reason")


def split_dir(lists: str | Path, split: int) -> Path:
    """The folder of split k's lists: `<lists>/split<k>`."""
    return Path(lists) / f"split{split}"


def split_list(lists: str | Path, split: int, part: str) -> Path:
    """`<lists>/split<k>/<part>.csv`, part one of LIST_PARTS."""
    if part not in LIST_PARTS:
        raise ValueError(f"part must be one of {LIST_PARTS}, got {part!r}")
    return split_dir(lists, split) / f"{part}.csv"


# ---- metric names: `<dataset>/split<k>/<protocol>/<metric>`, e.g. hmdb/split1/linear/top1_10clip
CLASSIFICATION_METRICS = ("top1", "top5", "meanclass")
_CLIP_METRIC = re.compile(rf"^({regex(CLASSIFICATION_METRICS)})_(\d+)clip$")
_RECALL_METRIC = re.compile(r"^recall_at_(\d+)$")


def metric_prefix(dataset: str, split: int, protocol: str) -> str:
    return f"{dataset}/split{split}/{protocol}"


def clip_metric(kind: str, clips: int) -> str:
    """`top1` over `clips` clips per video -> `top1_<clips>clip`."""
    return f"{kind}_{clips}clip"


def recall_metric(k: int) -> str:
    return f"recall_at_{k}"


def parse_clip_metric(name: str) -> tuple[str, int] | None:
    """`top1_10clip` -> ("top1", 10); None for any other name."""
    match = _CLIP_METRIC.match(name)
    return (match[1], int(match[2])) if match else None


def parse_recall_metric(name: str) -> int | None:
    """`recall_at_5` -> 5; None for any other name."""
    match = _RECALL_METRIC.match(name)
    return int(match[1]) if match else None


def is_final_metric(name: str) -> bool:
    """True for a final evaluation metric (not a training curve such as `train_loss`)."""
    return parse_clip_metric(name) is not None or parse_recall_metric(name) is not None


def split_metric_key(key: str) -> tuple[str, str]:
    """`hmdb/split1/linear/top1_10clip` -> ("hmdb/split1/linear", "top1_10clip")."""
    head, _, short = key.rpartition("/")
    return head, short


# ---- result paths (Snakemake patterns: `{ds}`, `{split}`, `{method}`, `{backbone}`, `{seed}`)
RUN_NAME = "{method}_{backbone}_s{seed}"


def job_file(root: str, stage: str, suffix: str, per_split: bool = True) -> str:
    """One job's file: `<root>/<stage>/{ds}[/split{split}]/<run name>.<suffix>`.

    Pretraining jobs have no downstream split (`per_split=False`).
    """
    split = "/split{split}" if per_split else ""
    return f"{root}/{stage}/{{ds}}{split}/{RUN_NAME}.{suffix}"


ENCODER = f"results/{PRETRAIN}/{{ds}}/{RUN_NAME}/encoder.pt"
PRETRAIN_SUMMARY = f"results/{PRETRAIN}/{{ds}}/{RUN_NAME}/summary.json"
RESULT = job_file("results", "{protocol}", "json")
FEATURES_FILE = job_file("results", FEATURES, "npz")


def parse_result_name(filename: str) -> dict[str, str] | None:
    """`vtdl_small3d_s0.json` -> {run, method, backbone, seed}; None for any other name.

    Backbone names are known, so `moco_td_r3d_18_s0.json` splits unambiguously.
    """
    stem = filename.removesuffix(".json")
    match = re.fullmatch(rf"(.+)_({regex(BACKBONES)})_s(\d+)", stem)
    if not match or not filename.endswith(".json"):
        return None
    method, backbone, seed = match.groups()
    return {"run": stem, "method": method, "backbone": backbone, "seed": seed}
