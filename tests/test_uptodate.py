"""vtdl.uptodate through `python -m vtdl.snakelock`: a plain no-op run is answered from the
record Snakemake's own dry run left, and every kind of change sends the run back to Snakemake.

A stand-in `snakemake` logs each call; its dry run says "Nothing to be done" unless the project
holds a file `work` (then it lists jobs), and its real run writes `ran`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vtdl import uptodate

FAKE = textwrap.dedent(
    """\
    #!{python}
    import os, sys, time
    log_file = os.path.join(os.path.dirname(sys.argv[0]), "calls.log")  # outside the project
    with open(log_file, "a") as log:
        log.write(" ".join(sys.argv[1:]) + "\\n")
    if "--dry-run" in sys.argv:
        if os.path.exists("edit-while-looking"):
            with open("params.yaml", "a") as f:
                f.write("# edited meanwhile\\n")
        if os.path.exists("work"):
            print("Job stats:\\njob count\\nall 1")
        else:
            print("Nothing to be done (all requested files are present and up to date).")
    else:
        open("ran", "w").close()
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "snakemake"
    fake.write_text(FAKE.format(python=sys.executable))
    fake.chmod(0o755)
    root = tmp_path / "project"
    (root / "results").mkdir(parents=True)
    (root / "results" / "table.md").write_text("| a |\n")
    (root / "params.yaml").write_text("pretrain: {epochs: 5}\n")
    return root


def _reproduce(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """`make reproduce`'s command line; the stand-in's calls it caused, and what it printed."""
    log = root.parent / "bin" / "calls.log"
    log.unlink(missing_ok=True)
    (root / "ran").unlink(missing_ok=True)
    snakemake = str(root.parent / "bin" / "snakemake")
    command = [snakemake, "--workflow-profile", "workflow/profiles/default", "--cores", "2", *args]
    done = subprocess.run(
        [sys.executable, "-m", "vtdl.snakelock", *command],
        cwd=root, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines() if log.exists() else [], done.stderr


def _later(path: Path) -> None:
    """A touch the file system can see (mtime in the future by a second)."""
    later = time.time() + 1
    os.utime(path, (later, later))


def test_a_no_op_is_checked_by_snakemake_once_then_answered_from_the_record(project):
    calls, said = _reproduce(project)
    assert [c.endswith("--dry-run") for c in calls] == [True]  # looked, found nothing, no run
    assert "Nothing to be done" in said and (project / uptodate.STAMP).is_file()
    calls, said = _reproduce(project)
    assert calls == [] and "vtdl: Nothing to be done" in said  # Snakemake not started at all


@pytest.mark.parametrize(
    "change",
    ["touch an output", "delete an output", "add a file", "edit params", "new setup"],
)
def test_any_change_sends_the_run_to_snakemake(project, change):
    _reproduce(project)
    table = project / "results" / "table.md"
    if change == "touch an output":
        _later(table)
    elif change == "delete an output":
        table.unlink()
    elif change == "add a file":
        (project / "results" / "new.json").write_text("{}")
    elif change == "edit params":
        (project / "params.yaml").write_text("pretrain: {epochs: 6}\n")
    else:
        (project / ".venv").mkdir()
        (project / ".venv" / ".installed").touch()
    (project / "work").touch()  # now Snakemake has something to do
    calls, _ = _reproduce(project)
    assert len(calls) == 2 and calls[0].endswith("--dry-run") and "--dry-run" not in calls[1]
    assert (project / "ran").exists() and not (project / uptodate.STAMP).exists()


def test_a_touch_without_work_is_checked_again_and_recorded_again(project):
    _reproduce(project)
    _later(project / "params.yaml")
    calls, _ = _reproduce(project)
    assert len(calls) == 1 and calls[0].endswith("--dry-run")
    assert _reproduce(project)[0] == []


def test_other_options_and_config_files_go_to_snakemake(project):
    _reproduce(project)
    (project / "work").touch()
    # An option the shortcut does not know always runs Snakemake, without a dry run first.
    calls, _ = _reproduce(project, "--forcerun", "pretrain")
    assert len(calls) == 1 and calls[0].endswith("--forcerun pretrain")
    (project / "work").unlink()
    overlay = project.parent / "overlay.yaml"  # outside the project: hashed by content
    overlay.write_text("pretrain: {epochs: 7}\n")
    assert len(_reproduce(project, "--configfile", str(overlay))[0]) == 1
    assert _reproduce(project, "--configfile", str(overlay))[0] == []
    overlay.write_text("pretrain: {epochs: 8}\n")
    assert len(_reproduce(project, "--configfile", str(overlay))[0]) == 1


def test_a_data_folder_outside_the_project_counts(project):
    videos = project.parent / "UCF-101" / "Archery"
    videos.mkdir(parents=True)
    (videos / "v_Archery_g01_c01.avi").write_bytes(b"video")
    with open(project / "params.yaml", "a") as f:
        f.write(f"datasets: {{ucf101: {{videos: {videos.parent}, splits: {project.parent}/x}}}}\n")
    _reproduce(project)
    assert _reproduce(project)[0] == []
    (videos / "v_Archery_g01_c02.avi").write_bytes(b"another video")
    assert len(_reproduce(project)[0]) == 1


def test_a_file_changed_while_snakemake_looked_is_not_recorded(project):
    (project / "edit-while-looking").touch()
    _reproduce(project)
    assert not (project / uptodate.STAMP).exists()
    (project / "edit-while-looking").unlink()
    assert len(_reproduce(project)[0]) == 1  # looked at again


def test_only_plain_snakemake_command_lines_take_the_shortcut():
    assert uptodate.config_files(["snakemake", "--cores", "2", "--configfile", "a", "b"]) == [
        "a",
        "b",
    ]
    assert uptodate.config_files(["snakemake", "--cores", "2", "all"]) == []
    for argv in (
        ["snakemake", "-n"],
        ["snakemake", "--touch"],
        ["snakemake", "--forceall"],
        ["snakemake", "--cores"],  # a value missing
        ["python", "-c", "pass"],
        [],
    ):
        assert uptodate.config_files(argv) is None, argv


def test_a_folder_linked_into_the_project_and_vtdl_variables_count(project):
    outside = project.parent / "disk" / "UCF-101"
    outside.mkdir(parents=True)
    (project / "data").mkdir()
    (project / "data" / "real").symlink_to(outside.parent)  # as `data/real/UCF-101` in presets
    _reproduce(project)
    assert _reproduce(project)[0] == []
    (outside / "v_Archery_g01_c01.avi").write_bytes(b"video")  # seen through the link
    assert len(_reproduce(project)[0]) == 1
    assert _reproduce(project)[0] == []
    assert len(_reproduce(project, env={"VTDL_EXPERIMENT": "other"})[0]) == 1
