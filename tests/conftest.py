"""Fixtures shared by several test modules."""

from __future__ import annotations

import shutil

import pytest
from tiny_project import BIN, make_project


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory):
    """A tiny copy of this project after the whole pipeline ran through `make push` (once per
    session): see tests/tiny_project.py."""
    if shutil.which("make") is None or not (BIN / "dvc").is_file():
        pytest.skip("make or the venv's dvc not found (run `make setup`)")
    return make_project(tmp_path_factory.mktemp("dvc"))
