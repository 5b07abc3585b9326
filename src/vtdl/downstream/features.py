"""`vtdl features`: frozen-encoder clip features, computed once for the linear probe and retrieval.

One job per encoder (or scratch backbone) x data set x split. The encoder runs in eval mode
(batch norm with its running statistics); a clip's feature is the global average pool of the
last feature map. For every video of the split's training and test lists it stores the
features of `test_clips` uniformly spaced, centre-cropped clips, and for the test videos also
that of the centre clip (the 1-clip test). `vtdl linear` and `vtdl retrieval` read this file
only, so the test videos are encoded once, not once per protocol.

The file (`.npz`, written atomically) holds float32 arrays `train` (V_train, N, D), `test`
(V_test, N, D), `test_centre` (V_test, D), int64 `train_labels` / `test_labels`, and `meta`, a
JSON string with the job's identity: data set, split, seed, method, backbone, encoder path and
checksum, pretraining run, list checksums, class names and the settings used.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from vtdl.downstream import common, evaluate
from vtdl.downstream.cached import FORMAT_VERSION
from vtdl.fsutil import atomic_path

PROTOCOL = "features"


def compute_features(args: argparse.Namespace) -> dict[str, Any]:
    """Run one features job; returns the metadata stored with the features in `--out`."""
    job = common.prepare_job(args, PROTOCOL)
    features_of = job.backbone_features()
    clips = job.test_clips
    print(
        f"{job.run_name()}: {len(job.train_entries)} training and {len(job.test_entries)} test "
        f"videos, {clips} clips each",
        flush=True,
    )
    train, train_labels = evaluate.clip_outputs(
        features_of, job.eval_dataset("train", clips), job, "features train"
    )
    test, test_labels = evaluate.clip_outputs(
        features_of, job.eval_dataset("test", clips), job, "features test"
    )
    centre, _ = evaluate.clip_outputs(
        features_of, job.eval_dataset("test", 1), job, "features test centre"
    )
    meta = {"format_version": FORMAT_VERSION, **job.identity(), "settings": job.settings.as_dict()}
    with atomic_path(job.out) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            train=train.astype(np.float32),
            test=test.astype(np.float32),
            test_centre=centre[:, 0].astype(np.float32),
            train_labels=train_labels.astype(np.int64),
            test_labels=test_labels.astype(np.int64),
            meta=np.array(json.dumps(meta, sort_keys=True)),
        )
    print(f"{job.run_name()}: features {tuple(train.shape)} / {tuple(test.shape)} -> {job.out}")
    return meta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_arguments(parser)


def run(args: argparse.Namespace) -> None:
    compute_features(args)
