"""Fixtures shared by several test modules."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from tiny_project import BIN, make_project

from vtdl.data.framestore import frame_file_path, write_frames


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """`make test` runs on two pytest-xdist workers (`--dist loadgroup`): one module's tests stay
    on one worker (module fixtures are built once), and every test of the session-wide
    `tiny_project` shares one worker, so the whole pipeline behind it runs once. That group is
    the longest, so it goes first: the other worker takes the modules meanwhile."""

    def shared(item: pytest.Item) -> bool:
        return "tiny_project" in getattr(item, "fixturenames", ())

    items.sort(key=lambda item: not shared(item))  # stable: the rest keep their order
    for item in items:
        group = "tiny_project" if shared(item) else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory):
    """A tiny copy of this project after the whole pipeline ran through `make push` (once per
    session): see tests/tiny_project.py."""
    if shutil.which("make") is None or not (BIN / "dvc").is_file():
        pytest.skip("make or the venv's dvc not found (run `make setup`)")
    # A folder name with a space and a quote: every clone of it (make, Snakemake's shell
    # commands, DVC, MLflow, S3, the UI) must work wherever a user keeps the project.
    base = tmp_path_factory.mktemp("dvc") / "it's a project"
    base.mkdir()
    return make_project(base)


TINY_SET_CLASSES = 3
TINY_SET_VIDEOS_PER_CLASS = 4


@pytest.fixture()
def tiny_set(tmp_path, monkeypatch):
    """12 tiny videos (3 classes) as frame files, their split list, and a private MLflow store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rng = np.random.default_rng(0)
    frames_root = tmp_path / "frames"
    rows = ["path,label,class,frames"]
    for label in range(TINY_SET_CLASSES):
        for v in range(TINY_SET_VIDEOS_PER_CLASS):
            rel = f"c{label}/v{v}.avi"
            count = int(rng.integers(10, 20))
            video = rng.integers(0, 255, (count, 20, 24, 3), dtype=np.uint8)
            write_frames(frame_file_path(frames_root, rel), video, codec="raw")
            rows.append(f"{rel},{label},c{label},{count}")
    lists = tmp_path / "splits"
    (lists / "split1").mkdir(parents=True)
    (lists / "split1" / "train.csv").write_text("\n".join(rows) + "\n")
    return tmp_path, frames_root, lists
