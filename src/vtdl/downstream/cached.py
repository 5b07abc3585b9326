"""Jobs that read cached features (`vtdl linear`, `vtdl retrieval`): load, check, describe.

The features file written by `vtdl features` records who computed it (encoder, checksum,
lists, settings); a job reading it takes its identity from there, and refuses a file computed
with other clip settings than the ones it is given, naming the key, so a stale cache never
passes for a fresh one.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vtdl.config import add_settings_argument
from vtdl.downstream.job import FEATURE_KEYS, IDENTITY, JobSpec, resolve_settings
from vtdl.errors import VtdlError

# Version of the features file written by vtdl.downstream.features (2: JobSpec identity keys).
FORMAT_VERSION = 2
ARRAYS = ("train", "test", "test_centre", "train_labels", "test_labels", "meta")


@dataclass(frozen=True)
class Features:
    """The arrays of a features file (see `vtdl.downstream.features`) and its metadata."""

    train: np.ndarray  # (V_train, N, D)
    test: np.ndarray  # (V_test, N, D)
    test_centre: np.ndarray  # (V_test, D)
    train_labels: np.ndarray  # (V_train,)
    test_labels: np.ndarray  # (V_test,)
    meta: dict[str, Any]


def load_features(path: str | Path) -> Features:
    """Read and check a features file; VtdlError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise VtdlError(f"--features {path}: features file not found (run vtdl features)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in ARRAYS if name not in data.files]
            if missing:
                raise VtdlError(f"--features {path}: not a features file (no {', '.join(missing)})")
            arrays = {name: data[name] for name in ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise VtdlError(f"--features {path}: not a readable features file ({err})") from None
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format_version") != FORMAT_VERSION:
        raise VtdlError(
            f"--features {path}: format version {meta.get('format_version')}, expected "
            f"{FORMAT_VERSION} (re-run vtdl features)"
        )
    features = Features(meta=meta, **arrays)
    n_train, n_test = len(features.train_labels), len(features.test_labels)
    if features.train.shape[0] != n_train or features.test.shape[0] != n_test:
        raise VtdlError(f"--features {path}: feature and label counts differ")
    return features


def prepare(args: argparse.Namespace, protocol: str) -> tuple[JobSpec, Features]:
    """The job described by `--features` and `--settings`, and its features."""
    settings = resolve_settings(args.settings, protocol)
    features = load_features(args.features)
    meta = features.meta
    for key in FEATURE_KEYS:
        if getattr(settings, key) != meta["settings"][key]:
            raise VtdlError(
                f"--features {args.features} was computed with downstream.{key} = "
                f"{meta['settings'][key]!r}, but --settings gives {getattr(settings, key)!r} "
                "(re-run vtdl features)"
            )
    job = JobSpec(
        protocol=protocol,
        settings=settings,
        out=Path(args.out),
        train_labels=[int(label) for label in features.train_labels],
        **{name: meta[name] for name in IDENTITY},
    )
    return job, features


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the stages that read cached features."""
    parser.add_argument("--features", required=True, help="features .npz from vtdl features")
    parser.add_argument("--out", required=True, help="result JSON to write")
    add_settings_argument(parser, "downstream")
