"""A tiny copy of this project, run end to end once per test session: the shared fixture.

`tiny_project` (tests/conftest.py) makes origin.git (this checkout's workflow, package and a
one-epoch params.yaml on a 2-class embedded data set), clone A after `make push` (the whole
pipeline through DVC: every stage, an MLflow store, a DVC remote), and returns their folder.
The DVC tests clone it again to pull; the browser test serves clone A's MLflow store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from vtdl.config import load_yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

PROJECT_FILES = [
    "Snakefile",
    "dvc.yaml",
    "Makefile",
    "pyproject.toml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
]


def tiny_params() -> dict:
    """The shipped params with one tiny embedded data set and a one-epoch grid."""
    params = load_yaml(ROOT / "params.yaml")
    params["datasets"] = {
        "synth_ucf": {
            "format": "ucf101",
            "synth": {
                "num_classes": 2,
                "groups": 4,
                "clips_per_group": 2,
                "frames_min": 10,
                "frames_max": 12,
                "height": 16,
                "width": 24,
                "fps": 25,
                "seed": 0,
            },
        }
    }
    params["extract"] = {"short_side": 12, "codec": "raw", "quality": 90, "on_error": "fail"}
    params["pretrain"].update(
        dataset="synth_ucf",
        methods=["vtdl"],
        backbones=["small3d"],
        seeds=[0],
        epochs=1,
        clip_len=4,
        crop_size=16,
        resize_short=16,
        batch_size=4,
        queue_size=4,
        checkpoint_every=1,
        num_workers=0,
        backbone_options={"small3d": {"channels": [4, 8, 8, 16]}},
    )
    params["downstream"].update(
        datasets=["synth_ucf"],
        splits=[1],
        labels_per_class=0,
        clip_len=4,
        crop_size=16,
        resize_short=16,
        test_clips=2,
        batch_size=4,
        eval_batch_size=4,
    )
    params["downstream"]["finetune"].update(epochs=1, checkpoint_every=1)
    params["downstream"]["linear"].update(max_iter=10)
    return params


def git(*args: str, cwd: Path) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True).stdout


def env() -> dict[str, str]:
    variables = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    variables["MLFLOW_TRACKING_URI"] = "sqlite:///mlflow.db"  # each clone's own store
    variables.pop("DVC_SITE_CACHE_DIR", None)
    return variables


def run(cwd: Path, *command: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def make(target: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`make <target>` with this venv (its set-up stamp taken as done: nothing is installed)."""
    venv = BIN.parent
    command = ["make", "-o", str(venv / ".installed"), f"VENV={venv}", "CORES=2", target, *args]
    return run(cwd, *command, timeout=400)


def out(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr)[-6000:]


def copy_project(dest: Path, params: dict) -> Path:
    """This checkout's workflow, package and project files in `dest`, with `params`."""
    for rel in PROJECT_FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "workflow", dest / "workflow", ignore=skip)
    shutil.copytree(ROOT / "src", dest / "src", ignore=skip)
    (dest / "params.yaml").write_text(json.dumps(params, indent=1))
    return dest


def make_project(base: Path) -> Path:
    """origin.git (a tiny copy of this project), clone A after `make push`, the remote."""
    origin = copy_project(base / "origin", tiny_params())
    git("init", "-q", "-b", "main", cwd=origin)
    git("add", "-A", cwd=origin)
    git("commit", "-qm", "tiny vtdl", cwd=origin)
    git("clone", "-q", "--bare", str(origin), str(base / "origin.git"), cwd=base)
    clone_a = base / "A"
    git("clone", "-q", str(base / "origin.git"), str(clone_a), cwd=base)

    push = make("push", clone_a)
    assert push.returncode == 0, out(push)
    assert "commit the pins" in push.stdout
    git("add", "dvc.lock", cwd=clone_a)
    git("commit", "-qm", "results of the tiny pipeline", cwd=clone_a)
    git("push", "-q", "origin", "main", cwd=clone_a)
    return base


def clone(base: Path, name: str) -> Path:
    git("clone", "-q", str(base / "origin.git"), str(base / name), cwd=base)
    return base / name


def digests(root: Path, *folders: str) -> dict[str, str]:
    """Checksum of every file below `folders` of `root` (Snakemake's markers left out)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted((root / folder).rglob("*"))
        if p.is_file() and p.name != ".snakemake_timestamp"
    }
