"""End to end: the Snakemake data stages on a tiny configuration in a temporary directory.

Runs the real workflow (this checkout's Snakefile, `--directory` a temporary folder) as a
subprocess, the way `make reproduce` does, and checks what the issue promises of it: the canonical
split lists and frame manifests are written, a second run does nothing, changing one class's
video re-extracts only that class, and a wrong parameter key stops the run before any job, with
the key named.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vtdl.codeinputs import stage_files
from vtdl.config import load_yaml
from vtdl.data.framestore import FrameFile, frame_file_path
from vtdl.data.synth import class_names
from vtdl.data.video import iter_frames, write_video

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
DATASETS = ("synth_ucf", "synth_hmdb")
TARGETS = [f"data/splits/{ds}" for ds in DATASETS]
NUM_CLASSES = 3
FRAMES = (10, 12)  # frames_min, frames_max

pytestmark = pytest.mark.slow


def tiny_params() -> dict:
    """The shipped params.yaml with tiny embedded data sets (other sections stay as shipped)."""
    params = load_yaml(ROOT / "params.yaml")
    common = {
        "num_classes": NUM_CLASSES,
        "frames_min": FRAMES[0],
        "frames_max": FRAMES[1],
        "height": 16,
        "width": 24,
        "fps": 25,
    }
    params["datasets"] = {
        "synth_ucf": {
            "format": "ucf101",
            "synth": {**common, "groups": 3, "clips_per_group": 1, "seed": 0},
        },
        "synth_hmdb": {
            "format": "hmdb51",
            "synth": {**common, "videos_per_class": 4, "seed": 1},
        },
    }
    params["extract"] = {"short_side": 12, "codec": "raw", "quality": 90, "on_error": "fail"}
    # Values these 6 training videos of at most 12 frames can hold (vtdl.data.sizes refuses
    # the shipped batch, queue and clip length for them before any job).
    params["pretrain"].update(dataset="synth_ucf", batch_size=2, queue_size=2, clip_len=4)
    params["downstream"].update(batch_size=4, clip_len=4)
    return params


def write_yaml(path: Path, data: dict) -> Path:
    # JSON is YAML: no extra dependency, exact round trip.
    path.write_text(json.dumps(data, indent=1))
    return path


def snakemake(
    workdir: Path,
    *args: str,
    config: str = "params.yaml",
    checkout: Path = ROOT,
    pythonpath: Path | None = None,
    timeout: int = 300,
) -> subprocess.CompletedProcess:
    if not SNAKEMAKE.is_file():
        pytest.skip(f"{SNAKEMAKE} not found (run `make setup`)")
    command = [
        str(SNAKEMAKE),
        "--snakefile",
        str(checkout / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / config),
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    if pythonpath is not None:  # a copied package instead of the installed one
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def output_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def job_counts(text: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table: rule -> number of jobs (without the total)."""
    lines = text.split("Job stats:", 1)[1].splitlines()
    counts = {}
    for line in lines[3:]:  # header, dashes
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        counts[match[1]] = int(match[2])
    counts.pop("total", None)
    return counts


def copy_checkout(dest: Path) -> Path:
    """The workflow and the package sources of this checkout, copied (to edit them in a test)."""
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copy(ROOT / "Snakefile", dest)
    return dest


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A temporary project directory in which the data targets have been built once."""
    workdir = tmp_path_factory.mktemp("workflow")
    write_yaml(workdir / "params.yaml", tiny_params())
    result = snakemake(workdir, *TARGETS)
    assert result.returncode == 0, output_of(result)[-6000:]
    assert job_counts(output_of(result)) == {
        "synth": 2,
        "extract": 2 * NUM_CLASSES,
        "splits": 2,
    }, output_of(result)[-3000:]
    return workdir


def test_data_stages_write_split_lists_and_frame_manifests(workdir):
    for ds, fmt in zip(DATASETS, ("ucf101", "hmdb51"), strict=True):
        classes = read_csv(workdir / "data" / "splits" / ds / "classes.csv")
        assert sorted(row["class"] for row in classes) == sorted(class_names(fmt)[:NUM_CLASSES])
        assert [row["label"] for row in classes] == ["0", "1", "2"]
        label_of = {row["class"]: row["label"] for row in classes}

        manifests = {}
        for cls in label_of:
            shard = workdir / "data" / "frames" / ds / cls
            manifest = json.loads((shard / "manifest.json").read_text())
            assert manifest["format"] == fmt and manifest["shard"] == cls
            assert manifest["skipped"] == []
            for video in manifest["videos"]:
                assert video["path"].startswith(f"{cls}/") and video["path"].endswith(".avi")
                assert FRAMES[0] <= video["frames"] <= FRAMES[1]
                assert (video["width"], video["height"]) == (18, 12)  # 24x16 -> short side 12
                assert (video["src_width"], video["src_height"]) == (24, 16)
                assert video["fps"] == 25.0
                stored = FrameFile(frame_file_path(workdir / "data" / "frames" / ds, video["path"]))
                assert stored.num_frames == video["frames"]
                manifests[video["path"]] = video["frames"]
        assert len(manifests) == NUM_CLASSES * (3 if fmt == "ucf101" else 4)

        for k in (1, 2, 3):
            train = read_csv(workdir / "data" / "splits" / ds / f"split{k}" / "train.csv")
            test = read_csv(workdir / "data" / "splits" / ds / f"split{k}" / "test.csv")
            assert train and test
            assert list(train[0]) == ["path", "label", "class", "frames"]
            train_paths = {row["path"] for row in train}
            test_paths = {row["path"] for row in test}
            assert not train_paths & test_paths
            assert train_paths | test_paths <= set(manifests)
            for row in train + test:
                assert row["label"] == label_of[row["class"]]
                assert row["path"].split("/")[0] == row["class"]
                assert int(row["frames"]) == manifests[row["path"]]
            if fmt == "ucf101":  # every video is in train or test of every split
                assert train_paths | test_paths == set(manifests)

    # log: and benchmark: on every rule.
    for kind in ("logs", "benchmarks"):
        suffix = ".log" if kind == "logs" else ".tsv"
        for ds in DATASETS:
            assert (workdir / kind / "synth" / f"{ds}{suffix}").is_file()
            assert (workdir / kind / "splits" / f"{ds}{suffix}").is_file()
            assert len(list((workdir / kind / "extract" / ds).glob(f"*{suffix}"))) == NUM_CLASSES


def test_second_run_does_nothing(workdir):
    result = snakemake(workdir, *TARGETS)
    assert result.returncode == 0, output_of(result)[-3000:]
    assert "Nothing to be done" in output_of(result), output_of(result)[-3000:]


def test_an_overlay_restating_values_re_runs_nothing(workdir):
    """A --configfile overlay that restates shipped values (a preset setting one key of a
    section does the same) must not re-run a job: Snakemake merges its keys first, and rule
    parameters are compared as text."""
    params = load_yaml(workdir / "params.yaml")
    overlay = {
        "extract": {"quality": params["extract"]["quality"]},
        "datasets": {
            "synth_hmdb": {"synth": {"seed": params["datasets"]["synth_hmdb"]["synth"]["seed"]}}
        },
    }
    # As `make reproduce ARGS="--configfile restated.yaml"` runs it: the overlay alone on the
    # command line (it replaces the helper's), params.yaml from the Snakefile.
    overlay_file = write_yaml(workdir / "restated.yaml", overlay)
    dry = snakemake(workdir, "-n", *TARGETS, "--configfile", str(overlay_file))
    assert dry.returncode == 0, output_of(dry)[-3000:]
    assert "Nothing to be done" in output_of(dry), output_of(dry)[-3000:]


def test_a_grown_pretraining_grid_plans_only_the_new_jobs(tiny_project, tmp_path):
    """A seed, a method and a backbone added to `pretrain` plan exactly the jobs they add: each
    job is handed its settings without the grid lists and with only its backbone's options, so
    the finished encoders (and everything downstream of them) are not re-run."""
    from tiny_project import make, out

    project = tiny_project / "A"
    shipped = load_yaml(project / "params.yaml")["pretrain"]
    assert (shipped["methods"], shipped["backbones"], shipped["seeds"]) == (
        ["vtdl"],
        ["small3d"],
        [0],
    )
    grown = {
        "methods": ["vtdl", "moco"],
        "backbones": ["small3d", "c3d"],
        "seeds": [0, 1],
        "backbone_options": {**shipped["backbone_options"], "c3d": {"batch_norm": False}},
    }
    overlay = write_yaml(tmp_path / "grown.yaml", {"pretrain": grown})
    dry = make("dry-run", project, f"ARGS=--configfile {overlay}")
    assert dry.returncode == 0, out(dry)
    text = dry.stdout + dry.stderr
    # (vtdl, moco, supervised) x 2 backbones x 2 seeds, less the two encoders already trained.
    assert job_counts(text)["pretrain"] == 3 * 2 * 2 - 2, out(dry)
    planned = set(re.findall(r"results/pretrain/synth_ucf/(\w+)/encoder\.pt", text))
    assert not planned & {"vtdl_small3d_s0", "supervised_small3d_s0"}, planned
    # Fine-tuning: the 10 new encoders and the scratch baseline of the 3 new backbone x seed
    # pairs; the finished results of vtdl, supervised and scratch small3d s0 stay.
    assert job_counts(text)["finetune"] == 10 + 3, out(dry)


def test_a_no_op_make_reproduce_is_answered_without_snakemake_until_something_changes(
    tiny_project, tmp_path
):
    """vtdl.uptodate on the real pipeline: Snakemake's dry run finds nothing once, the next
    run is answered from its record, and an edited parameter runs exactly its jobs."""
    from tiny_project import make, out

    project = tmp_path / "A"
    shutil.copytree(tiny_project / "A", project, symlinks=True)
    looked = make("reproduce", project)
    assert looked.returncode == 0, out(looked)
    assert "Nothing to be done (all requested files" in out(looked)  # Snakemake's own words
    answered = make("reproduce", project)
    assert answered.returncode == 0, out(answered)
    assert "vtdl: Nothing to be done: no file, option or config file changed" in out(answered)
    assert "Building DAG" not in out(answered)
    params = load_yaml(project / "params.yaml")
    params["downstream"]["linear"]["max_iter"] += 1
    write_yaml(project / "params.yaml", params)
    edited = make("reproduce", project)
    assert edited.returncode == 0, out(edited)
    counts = job_counts(edited.stdout + edited.stderr)
    # vtdl, supervised and scratch: the linear probes only.
    assert counts.get("linear") == 3 and "pretrain" not in counts, counts
    again = make("reproduce", project)
    assert "Nothing to be done (all requested files" in out(again), out(again)


def test_changing_one_class_re_extracts_only_that_class(workdir):
    ds, cls = "synth_ucf", class_names("ucf101")[1]
    frames_root = workdir / "data" / "frames" / ds
    video = sorted((workdir / "data" / "raw" / ds / "videos" / cls).iterdir())[0]
    # Replace the video by its own frames backwards: a different file with the same layout.
    frames = list(iter_frames(video))[::-1]
    write_video(video, frames, fps=25.0)
    manifests = {p.parent.name: p.read_bytes() for p in frames_root.glob("*/manifest.json")}

    dry = snakemake(workdir, "-n", *TARGETS)
    assert dry.returncode == 0, output_of(dry)[-3000:]
    assert job_counts(output_of(dry)) == {"extract": 1, "splits": 1}, output_of(dry)[-3000:]
    assert f"shard={cls}" in output_of(dry)

    result = snakemake(workdir, *TARGETS)
    assert result.returncode == 0, output_of(result)[-3000:]
    after = {p.parent.name: p.read_bytes() for p in frames_root.glob("*/manifest.json")}
    assert set(after) == set(manifests)
    changed = {name for name in after if after[name] != manifests[name]}
    assert changed == {cls}  # the new checksum; the other shards were not rewritten


def test_editing_a_module_re_runs_exactly_the_stages_that_import_it(tmp_path):
    """Code inputs are the stages' computed imports: edit each module, dry-run, count jobs.
    Touching every file without editing it re-runs nothing (a branch switched and back must
    not redo hours of training: Snakemake compares the recorded checksums of small inputs).

    The workflow runs from a copy of this checkout, so the copy's sources can be edited.
    """
    checkout = copy_checkout(tmp_path / "checkout")
    work = tmp_path / "work"
    work.mkdir()
    write_yaml(work / "params.yaml", tiny_params())
    built = snakemake(work, *TARGETS, checkout=checkout)
    assert built.returncode == 0, output_of(built)[-3000:]

    stages = {rule: stage_files(f"vtdl.data.{rule}") for rule in ("synth", "extract", "splits")}
    assert "progress.py" in stages["extract"] and "data/video.py" not in stages["extract"]
    everything = {"synth": 2, "extract": 2 * NUM_CLASSES, "splits": 2}
    # Each rule's jobs and, through their outputs, the jobs after them.
    expected_if = {
        "synth": everything,
        "extract": {"extract": 2 * NUM_CLASSES, "splits": 2},
        "splits": {"splits": 2},
    }
    package = checkout / "src" / "vtdl"
    later = time.time() + 60
    for path in package.rglob("*.py"):
        os.utime(path, (later, later))
    touched = snakemake(work, "-n", *TARGETS, checkout=checkout)
    assert "Nothing to be done" in output_of(touched), output_of(touched)[-2000:]
    for module in sorted({m for files in stages.values() for m in files} | {"pretext.py"}):
        path = package / module
        before, source = path.stat(), path.read_bytes()
        path.write_bytes(source + b"# edited\n")  # an edit (Snakemake compares contents too)
        try:
            dry = snakemake(work, "-n", *TARGETS, checkout=checkout)
        finally:
            path.write_bytes(source)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert dry.returncode == 0, output_of(dry)[-3000:]
        first = next((r for r in stages if module in stages[r]), None)
        if first is None:
            assert "Nothing to be done" in output_of(dry), (module, output_of(dry)[-2000:])
        else:
            assert job_counts(output_of(dry)) == expected_if[first], module


def test_a_method_registered_in_names_gets_its_jobs_and_report_row(tmp_path):
    """Adding a method is one registry entry: the schema, rules and grid follow (dry run)."""
    checkout = copy_checkout(tmp_path / "checkout")
    names_py = checkout / "src" / "vtdl" / "names.py"
    source = names_py.read_text(encoding="utf-8")
    entry = (
        '    "dummy": Method(SELF_SUPERVISED, "+dummy", "a test method", compare_to=(SCRATCH,)),\n'
    )
    assert source.count("    SUPERVISED: Method(") == 1
    names_py.write_text(
        source.replace("    SUPERVISED: Method(", entry + "    SUPERVISED: Method(")
    )
    params = tiny_params()
    params["pretrain"].update(methods=["moco", "dummy"], seeds=[0])
    write_yaml(tmp_path / "params.yaml", params)
    built = snakemake(tmp_path, *TARGETS, checkout=checkout, pythonpath=checkout / "src")
    assert built.returncode == 0, output_of(built)[-3000:]
    dry = snakemake(tmp_path, "-n", checkout=checkout, pythonpath=checkout / "src")
    assert dry.returncode == 0, output_of(dry)[-3000:]
    text = output_of(dry)
    counts = job_counts(text)
    # scratch, moco, dummy, supervised per data set x split; pretraining for the three encoders.
    cells = len(params["downstream"]["datasets"]) * len(params["downstream"]["splits"])
    assert counts["pretrain"] == 3 and counts["features"] == 4 * cells, counts
    assert counts["finetune"] == counts["linear"] == counts["retrieval"] == 4 * cells, counts
    assert counts["report"] == 1
    assert "results/pretrain/synth_ucf/dummy_small3d_s0/encoder.pt" in text
    # Without the entry, the same parameters are refused before any job, naming the key.
    names_py.write_text(source)
    refused = snakemake(tmp_path, "-n", checkout=checkout, pythonpath=checkout / "src")
    assert refused.returncode != 0
    assert "pretrain.methods" in output_of(refused) and "dummy" in output_of(refused)


def test_a_wrong_params_key_is_rejected_before_any_job(tmp_path):
    params = tiny_params()
    write_yaml(tmp_path / "params.yaml", params)
    params["extract"]["short_sid"] = params["extract"].pop("short_side")
    write_yaml(tmp_path / "bad.yaml", params)
    result = snakemake(tmp_path, *TARGETS, config="bad.yaml")
    assert result.returncode != 0
    text = output_of(result)
    assert "short_sid" in text and "extract" in text, text[-3000:]
    assert "rule synth" not in text and "Job stats" not in text
    assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()


def test_workflow_lint_is_clean():
    """`snakemake --lint` (a conda env per rule, params for non-file values, ...) finds nothing."""
    if not SNAKEMAKE.is_file():
        pytest.skip(f"{SNAKEMAKE} not found (run `make setup`)")
    result = subprocess.run(
        [str(SNAKEMAKE), "--lint", "--snakefile", str(ROOT / "Snakefile")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, output_of(result)[-4000:]
    assert "Lints for" not in output_of(result), output_of(result)[-4000:]


def test_conda_env_installs_this_checkout_with_its_pins():
    """workflow/envs/vtdl.yaml: Python 3.11, pip, and this package (whose pins are pyproject's).

    conda runs pip in the folder of the environment file it is given: workflow/envs/ for
    `conda env create -f workflow/envs/vtdl.yaml`, and <working dir>/.snakemake/conda/ for the
    copy Snakemake hands it; the relative path must reach the repository root from both.
    """
    env_file = ROOT / "workflow" / "envs" / "vtdl.yaml"
    env = load_yaml(env_file)
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert len(pip) == 1
    option, path = pip[0].split()
    assert option in ("-e", "--editable")
    for folder in (env_file.parent, ROOT / ".snakemake" / "conda"):
        assert (folder / path).resolve() == ROOT
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'name = "vtdl"' in pyproject and '"torch==2.14.1"' in pyproject
    rules = (ROOT / "workflow" / "rules" / "data.smk").read_text()
    num_rules = len(re.findall(r"^(?:rule|checkpoint) \w+:", rules, re.MULTILINE))
    assert num_rules == 3 and rules.count("conda:\n        ENV\n") == num_rules
