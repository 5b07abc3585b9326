"""`vtdl retrieval`: nearest-neighbour video retrieval with frozen encoder features.

Every test video (query) and every training video of the split (gallery: ALL of them, not the
labelled subset) is described by the mean of its `test_clips` uniformly spaced, centre-cropped
clip features (cached by `vtdl features`; this job imports no torch). Features are centred with
the gallery mean and L2-normalised; recall@k is the fraction of queries with at least one video
of their class among the k most cosine-similar gallery videos, k in 1, 5, 10, 20, 50 (capped
at the gallery size; see `vtdl.metrics.recall_at_k`).

The run also gets `neighbours.json`: the first test video of each class (up to
`SHEET_QUERIES`) with its `SHEET_NEIGHBOURS` nearest gallery videos, as row numbers of the
split's test and train lists; `vtdl report` draws its contact sheet from it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from vtdl.downstream import cached
from vtdl.downstream.job import finish
from vtdl.metrics import RETRIEVAL_KS, nearest_neighbours, recall_at_k
from vtdl.names import recall_metric

PROTOCOL = "retrieval"
SHEET_QUERIES = 10  # rows of the report's contact sheet
SHEET_NEIGHBOURS = 5


def sheet_examples(
    query: np.ndarray, query_labels: list[int], gallery: np.ndarray, gallery_labels: list[int]
) -> dict[str, Any]:
    """The contact sheet's content: per class (in label order, at most SHEET_QUERIES) its
    first query and that query's nearest gallery videos, as list rows with their labels."""
    firsts = {}
    for row, label in enumerate(query_labels):
        firsts.setdefault(label, row)
    rows = [firsts[label] for label in sorted(firsts)][:SHEET_QUERIES]
    order = nearest_neighbours(query[rows], gallery, SHEET_NEIGHBOURS) if rows else []
    return {
        "queries": [
            {
                "test_row": row,
                "label": query_labels[row],
                "train_rows": [int(i) for i in neighbours],
                "labels": [gallery_labels[i] for i in neighbours],
            }
            for row, neighbours in zip(rows, order, strict=True)
        ]
    }


def retrieval(args: argparse.Namespace) -> dict[str, Any]:
    """Run one retrieval job; returns the result written to `--out`."""
    job, features = cached.prepare(args, PROTOCOL)
    job.extra_params = {"num_gallery_videos": len(features.train_labels)}
    with job.start_run(job.params()) as run:
        job.log_inputs(run, args.features, args.features)
        print(
            f"{job.run_name()}: {len(features.test_labels)} queries, "
            f"{len(features.train_labels)} gallery videos, {job.test_clips} clips each; "
            f"MLflow run {run.run_id}",
            flush=True,
        )
        recall = recall_at_k(
            features.test.mean(axis=1),
            features.test_labels,
            features.train.mean(axis=1),
            features.train_labels,
            RETRIEVAL_KS,
        )
        metrics = {f"{job.prefix}/{recall_metric(k)}": value for k, value in recall.items()}
        examples = sheet_examples(
            features.test.mean(axis=1),
            [int(label) for label in features.test_labels],
            features.train.mean(axis=1),
            [int(label) for label in features.train_labels],
        )
        run.log_dict(examples, "neighbours.json")
        return finish(run, job, metrics)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cached.add_arguments(parser)


def run(args: argparse.Namespace) -> None:
    result = retrieval(args)
    print(json.dumps(result, indent=2, sort_keys=True))
