"""Resources: a file size limit (what a full disk looks like to a job) while extracting and
while checkpointing, a read-only output folder, and frame files damaged after extraction.

A file size limit is set with `RLIMIT_FSIZE` in a child process running the real `vtdl`
command (the test process stays unlimited); the other faults run the stage in this process
(pretraining costs a second here, against about ten to start a `vtdl pretrain` process). Each
trial checks: one error line that names the file (exit status 2 from the command line), nothing
half-written in place of an output, every earlier output unchanged, and (for the checkpoint) a
re-run without the fault ending where an undisturbed job ends. A frame file damaged after
extraction is caught by the checksum its shard's manifest recorded, before a single clip of it
is trained on.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_jobs import interrupt_at_epoch, pretrain_args, pretrain_argv, tiny_settings

from vtdl import pretrain as pretrain_stage
from vtdl import tracking
from vtdl.checkpoint import load_checkpoint
from vtdl.data.extract import extract_shard
from vtdl.data.framestore import FrameFile, frame_file_path
from vtdl.data.video import write_video
from vtdl.errors import VtdlError

VTDL = [sys.executable, "-m", "vtdl.cli"]
CLASSES = ("Alpha", "Beta", "Gamma")


def _vtdl(argv: list[str], store: Path, limit: int | None = None) -> subprocess.CompletedProcess:
    """`vtdl <argv>` in a child process, its files limited to `limit` bytes (RLIMIT_FSIZE)."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    return subprocess.run(
        [*VTDL, *argv], env=env, capture_output=True, text=True, timeout=300,
        preexec_fn=limit_files if limit else None,
    )  # fmt: skip


def _one_error_line(done: subprocess.CompletedProcess, stage: str, *names: str) -> str:
    """The job failed with one `vtdl <stage>: error:` line naming each of `names`."""
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"vtdl {stage}: error")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


def _one_line(err: BaseException, *names: str) -> str:
    """A VtdlError's message: one line naming each of `names`."""
    line = str(err)
    assert "\n" not in line, line
    for name in names:
        assert name in line, line
    return line


def _leftovers(folder: Path) -> list[str]:
    """Hidden temporaries (atomic writes in progress) below `folder`."""
    return sorted(str(p) for p in folder.rglob(".*") if p.name != ".snakemake_timestamp")


@contextlib.contextmanager
def read_only(folder: Path):
    """`folder` refuses new files while the block runs. As root (which ignores permission
    bits) the folder is made immutable with chattr; otherwise its write bits are removed."""
    chattr = shutil.which("chattr")
    if os.geteuid() == 0:
        if chattr is None or subprocess.run([chattr, "+i", str(folder)]).returncode:
            pytest.skip("running as root without a working chattr: cannot make a folder read-only")
        try:
            yield
        finally:
            subprocess.run([chattr, "-i", str(folder)], check=True)
    else:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three class folders of four short videos each, extracted as raw and as JPEG frames, and
    a training list of all twelve."""
    root = tmp_path_factory.mktemp("resources")
    rng = np.random.default_rng(7)
    for name in CLASSES:
        for v in range(4):
            video = rng.integers(0, 255, (14, 24, 32, 3), dtype=np.uint8)
            write_video(root / "videos" / name / f"v_{name}_g01_c0{v + 1}.avi", video)
    rows = ["path,label,class,frames"]
    for codec in ("raw", "jpeg"):
        for label, name in enumerate(CLASSES):
            manifest = extract_shard(
                "ucf101", root / "videos", name, root / codec, short_side=20, codec=codec
            )
            if codec == "raw":
                rows += [f"{v['path']},{label},{name},{v['frames']}" for v in manifest["videos"]]
    (root / "lists" / "split1").mkdir(parents=True)
    (root / "lists" / "split1" / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) * 2 // 3]))
        return
    frames = FrameFile(path)
    offset = int(frames._offsets[frames.num_frames // 2]) + 7  # inside a middle frame's data
    frames.close()
    data[offset] ^= 0x10  # one flipped bit: the header and the index stay valid
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("codec", "how"), [("raw", "flipped"), ("jpeg", "flipped"), ("raw", "truncated")]
)
def test_a_frame_file_damaged_after_extraction_is_refused_not_trained_on(
    data, tmp_path, fault, monkeypatch, codec, how
):
    fault("resources", f"{codec} frame file {how} after extraction")
    frames = tmp_path / "frames"
    shutil.copytree(data / codec, frames)
    damaged = frame_file_path(frames, "Beta/v_Beta_g01_c03.avi")
    others = [p for p in frames.rglob("*") if p.is_file() and p != damaged]
    before = fault.snapshot(others)
    _damage(damaged, how)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{data / 'mlflow.db'}")
    earlier = {r["run_id"] for r in tracking.find_runs()}
    args = pretrain_args(tmp_path, frames, data / "lists", "out")
    with pytest.raises(VtdlError) as err:
        pretrain_stage.pretrain(args, tiny_settings(epochs=1))
    line = _one_line(err.value, str(damaged))
    assert ("damaged since extraction" if how == "flipped" else "truncated") in line
    assert "re-run" in line
    assert not (tmp_path / "out" / "encoder.pt").exists()
    new = [r["status"] for r in tracking.find_runs() if r["run_id"] not in earlier]
    assert new == ["FAILED"]  # so the report leaves it out
    fault.intact(before)


def test_a_file_size_limit_during_extraction_keeps_every_finished_shard(data, tmp_path, fault):
    fault("resources", "disk full (file size limit) during extraction")
    out = tmp_path / "frames"
    shutil.copytree(data / "jpeg", out)  # Alpha, Beta, Gamma extracted earlier (JPEG)
    before = fault.snapshot([out])
    # Re-extract Beta as raw frames (20x26x3 bytes each, 14 per video): over a 4 kB limit.
    argv = ["extract", "--format", "ucf101", "--videos", str(data / "videos"), "--out", str(out),
            "--shard", "Beta", "--short-side", "20", "--codec", "raw"]  # fmt: skip
    done = _vtdl(argv, tmp_path / "m.db", limit=4000)
    _one_error_line(done, "extract", str(out / "Beta"), ".frames", "limited to 4000 bytes")
    fault.intact(before)  # the old Beta and the other shards, byte for byte
    assert _leftovers(out) == []
    done = _vtdl(argv, tmp_path / "m.db")  # space again: the same command finishes
    assert done.returncode == 0, done.stderr[-3000:]
    assert FrameFile(out / "Beta" / "v_Beta_g01_c01.avi.frames").codec == "raw"


def test_a_read_only_output_folder_is_one_error_naming_it_extract(data, tmp_path, fault):
    fault("resources", "read-only output folder (extraction)")
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier output\n")
    before = fault.snapshot([out])
    argv = ["extract", "--format", "ucf101", "--videos", str(data / "videos"),
            "--out", str(out), "--shard", "Alpha", "--short-side", "20"]  # fmt: skip
    with read_only(out):
        done = _vtdl(argv, tmp_path / "m.db")
    _one_error_line(done, "extract", str(out / "Alpha"), f"the folder {out} is not writable")
    fault.intact(before)
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]


def test_a_read_only_output_folder_is_one_error_naming_it_pretrain(
    data, tmp_path, fault, monkeypatch
):
    fault("resources", "read-only output folder (pretraining)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{data / 'mlflow.db'}")
    out = tmp_path / "job"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier output\n")
    before = fault.snapshot([out])
    args = pretrain_args(tmp_path, data / "raw", data / "lists", "job")
    runs_before = len(tracking.find_runs("tags.stage = 'pretrain'"))
    with read_only(out), pytest.raises(VtdlError) as err:
        pretrain_stage.pretrain(args, tiny_settings(epochs=1))
    _one_line(err.value, str(out / "checkpoint.pt"), f"the folder {out} is not writable")
    # Refused before the first epoch: no MLflow run was started.
    assert len(tracking.find_runs("tags.stage = 'pretrain'")) == runs_before
    fault.intact(before)
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]


def test_a_file_size_limit_while_checkpointing_keeps_the_last_checkpoint(
    data, tmp_path, fault, monkeypatch
):
    fault("resources", "disk full (file size limit) while checkpointing")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    # Wide enough that a checkpoint (about 5 MB) outgrows the 3 MB limit, the store does not.
    settings = tiny_settings(backbone_options={"small3d": {"channels": [16, 32, 64, 128]}})
    frames, lists = data / "raw", data / "lists"
    pretrain_stage.pretrain(pretrain_args(tmp_path, frames, lists, "whole"), settings)
    lift = interrupt_at_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        pretrain_stage.pretrain(pretrain_args(tmp_path, frames, lists, "job"), settings)
    lift()
    checkpoint = tmp_path / "job" / "checkpoint.pt"
    assert load_checkpoint(checkpoint)["epoch"] == 1
    first_run = load_checkpoint(checkpoint)["mlflow_run_id"]
    before = fault.snapshot([checkpoint, frames, lists])
    argv = pretrain_argv(tmp_path, frames, lists, "job", settings)
    done = _vtdl(argv, tmp_path / "m.db", limit=3_000_000)  # resumes, cannot save epoch 2
    _one_error_line(done, "pretrain", str(checkpoint), "limited to 3000000 bytes")
    fault.intact(before)  # the epoch-1 checkpoint, the frames and the list
    assert _leftovers(tmp_path / "job") == []
    assert not (tmp_path / "job" / "encoder.pt").exists()
    pretrain_stage.pretrain(pretrain_args(tmp_path, frames, lists, "job"), settings)  # space again
    whole = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    resumed = load_checkpoint(checkpoint)["model"]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    # The interrupted run was continued twice (the failed try, the finished one), never doubled.
    runs = {r["run_id"]: r["status"] for r in tracking.find_runs("tags.stage = 'pretrain'")}
    assert len(runs) == 2 and set(runs.values()) == {"FINISHED"}
    assert summary["mlflow_run_id"] == first_run
