"""Hostile names: class folders and Kinetics labels that hold shell syntax, quotes, spaces,
parentheses or non-ASCII letters go through every rule and stage; names that cannot are refused
before any job, naming the folder.

One real `snakemake` run of the whole pipeline (the test_workflow helpers, a tiny_project-sized
configuration) on three downloaded-layout sets made here: a Kinetics set whose labels are the
pretraining and downstream classes (real labels like `passing American football (in game)` and
`massaging person's head`, and payloads `$(touch PWNED)`, backticks and `; touch PWNED`), and
HMDB51 and UCF101 sets with hostile class folders through the data stages. Nothing may ever
create a file named PWNED; every class must reach the lists, the frames, the results and the
report under its own name. A newline, a brace (Snakemake's wildcard syntax) or, in the UCF101
layout, whitespace cannot be named in the rules' files or split files: refused by name.

Stale results (issue item 8) ride on the same run: a changed video re-extracts its own shard
and re-runs everything after it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_workflow import job_counts, output_of, snakemake
from tiny_project import tiny_params

from vtdl import cli
from vtdl.data.video import write_video

pytestmark = pytest.mark.slow

PAYLOAD = "PWNED"  # what every payload would create in the shell's working directory
K_LABELS = [
    "passing American football (in game)",
    "massaging person's head",
    'say "cheese" $(touch PWNED)^$',  # two $: mathtext would fail on the confusion matrix
    "`touch PWNED`; touch PWNED & echo",
    "crème brûlée — ünïcödé 料理",
]
HMDB_CLASSES = ['brush hair (it\'s "fine")', "$(touch PWNED)", "`touch PWNED`;ls", "Ölçü 料理"]
UCF_CLASSES = ["It's(1)", "$(touch_PWNED)", "`touch_PWNED`;ls", "Ünïcödé料理"]
FRAMES = 12


def _video(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 255, (16, 24, 3), dtype=np.uint8) for _ in range(FRAMES)]
    write_video(path, frames, fps=25.0)


def _kinetics(root: Path) -> tuple[Path, Path]:
    """3 training and 1 validation video per label; the split CSVs quote what needs quoting."""
    videos, splits = root / "kinetics", root / "kinetics_splits"
    splits.mkdir(parents=True)
    rows: dict[str, list] = {"train": [], "val": []}
    for c, label in enumerate(K_LABELS):
        for k in range(4):
            part, ytid = ("train" if k < 3 else "val"), f"y{c}v{k}"
            _video(videos / part / label / f"{ytid}_000000_000010.mp4", 10 * c + k)
            rows[part].append([label, ytid, 0, 10, part])
    for part, name in (("train", "train.csv"), ("val", "validate.csv")):
        with open(splits / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            writer.writerows(rows[part])
    return videos, splits


def _hmdb(root: Path) -> tuple[Path, Path]:
    """4 videos per class (hostile file names too): 3 train, 1 test in split 1."""
    videos, splits = root / "hmdb", root / "hmdb_splits"
    splits.mkdir()
    for c, name in enumerate(HMDB_CLASSES):
        files = [f"{name} clip ({i}).avi" for i in range(4)]
        for i, file in enumerate(files):
            _video(videos / name / file, 100 + 10 * c + i)
        codes = [1, 1, 1, 2]
        text = "".join(f"{file} {code} \n" for file, code in zip(files, codes, strict=True))
        (splits / f"{name}_test_split1.txt").write_text(text, encoding="utf-8")
    return videos, splits


def _ucf(root: Path) -> tuple[Path, Path]:
    """3 groups of 1 clip per class; split 1 tests group 1."""
    videos, splits = root / "ucf", root / "ucf_splits"
    splits.mkdir()
    train, test = [], []
    for c, name in enumerate(UCF_CLASSES):
        for g in (1, 2, 3):
            rel = f"{name}/v_{name}_g{g:02d}_c01.avi"
            _video(videos / rel, 200 + 10 * c + g)
            (test if g == 1 else train).append(rel if g == 1 else f"{rel} {c + 1}")
    crlf = "\r\n".join
    (splits / "classInd.txt").write_text(crlf(f"{i} {n}" for i, n in enumerate(UCF_CLASSES, 1)))
    (splits / "trainlist01.txt").write_text(crlf(train), encoding="utf-8")
    (splits / "testlist01.txt").write_text(crlf(test), encoding="utf-8")
    return videos, splits


def _params(root: Path) -> dict:
    params = tiny_params()
    params["datasets"] = {
        name: {"format": fmt, "videos": str(videos), "splits": str(splits)}
        for name, fmt, (videos, splits) in (
            ("k400", "kinetics", _kinetics(root)),
            ("hmdb", "hmdb51", _hmdb(root)),
            ("ucf", "ucf101", _ucf(root)),
        )
    }
    params["splits"]["on_missing"] = "error"  # every listed video must be found by its name
    params["pretrain"].update(dataset="k400", split=1)  # 15 training videos: batch 4, queue 4
    params["downstream"].update(datasets=["k400"], splits=[1])
    return params


def _no_payload_ran(*roots: Path) -> None:
    ran = [p for root in roots for p in root.rglob(PAYLOAD)]
    assert not ran, f"a name was run as a command: {ran}"


def _write_params(work: Path, params: dict) -> None:
    (work / "params.yaml").write_text(json.dumps(params, indent=1), encoding="utf-8")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The whole pipeline (plus the HMDB51 and UCF101 lists) run once on hostile names."""
    root = tmp_path_factory.mktemp("hostile")
    work = root / "work"
    work.mkdir()
    # The downloads' own folder is hostile too: the rules pass it to the shell.
    params = _params(root / "down load's $(touch PWNED)")
    _write_params(work, params)
    # 18 shards and 17 training and evaluation jobs: longer than the helper's default limit.
    result = snakemake(work, "all", "data/splits/hmdb", "data/splits/ucf", timeout=1200)
    assert result.returncode == 0, output_of(result)[-6000:]
    return root, work, params


def _classes(work: Path, ds: str) -> list[str]:
    with open(work / "data" / "splits" / ds / "classes.csv", newline="", encoding="utf-8") as f:
        return [row["class"] for row in csv.DictReader(f)]


def test_hostile_names_go_through_every_rule_and_run_nothing(pipeline, fault):
    fault("hostile names", "shell syntax, quotes, spaces, non-ASCII in class names (Snakemake)")
    root, work, _ = pipeline
    _no_payload_ran(root)
    assert _classes(work, "k400") == sorted(K_LABELS)
    assert sorted(_classes(work, "hmdb")) == sorted(HMDB_CLASSES)
    assert _classes(work, "ucf") == UCF_CLASSES  # classInd.txt's order
    for ds, shards in (
        ("k400", [f"{part}/{label}" for part in ("train", "val") for label in K_LABELS]),
        ("hmdb", HMDB_CLASSES),
        ("ucf", UCF_CLASSES),
    ):
        for shard in shards:
            manifest = json.loads((work / "data/frames" / ds / shard / "manifest.json").read_text())
            assert manifest["shard"] == shard and manifest["skipped"] == []
            assert all(v["frames"] == FRAMES for v in manifest["videos"])
    with open(work / "data/splits/k400/split1/train.csv", newline="", encoding="utf-8") as f:
        train = list(csv.DictReader(f))
    assert len(train) == 15 and {row["class"] for row in train} == set(K_LABELS)
    assert all(row["path"].split("/")[1] == row["class"] for row in train)
    # Every job of the grid finished, the report drew its class montage and confusion matrices.
    for protocol in ("finetune", "linear", "retrieval"):
        for method in ("scratch", "vtdl", "supervised"):
            result = json.loads(
                (work / f"results/{protocol}/k400/split1/{method}_small3d_s0.json").read_text()
            )
            assert result["metrics"], (protocol, method)
    assert (work / "results/plots/classes/k400.png").is_file()
    assert len(list((work / "results/plots/confusion").glob("k400_*.png"))) == 3
    assert "k400" in (work / "results/tables/all_metrics.csv").read_text()


def test_a_changed_video_re_extracts_its_shard_and_what_follows(pipeline, fault):
    fault("stale results", "a changed video (Snakemake dry run)")
    _, work, params = pipeline
    videos = Path(params["datasets"]["k400"]["videos"])
    video = videos / "train" / K_LABELS[1] / "y1v0_000000_000010.mp4"
    before = video.read_bytes()
    _video(video, seed=999)  # same name and length, other pixels
    try:
        dry = snakemake(work, "-n")
    finally:
        video.write_bytes(before)
    assert dry.returncode == 0, output_of(dry)[-3000:]
    counts = job_counts(output_of(dry))
    assert counts == {
        "extract": 1, "splits": 1, "pretrain": 2, "finetune": 3, "features": 3,
        "linear": 3, "retrieval": 3, "report": 1, "all": 1,
    }, counts  # fmt: skip
    assert f"shard=train/{K_LABELS[1]}" in output_of(dry)


# Names the workflow cannot carry: (layout, folder to add, text the error must hold).
REFUSED = {
    "newline in a class folder": ("kinetics", "train/line\nbreak", "'train/line\\nbreak'"),
    "brace in a class folder": ("hmdb51", "a {ds} b", "'a {ds} b' holds a brace"),
    "whitespace in a UCF101 class folder": ("ucf101", "Apply Eye", "'Apply Eye' holds whitespace"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_name_the_rules_cannot_carry_is_refused_before_any_job(tmp_path, name, fault):
    fault("hostile names", f"{name} (refused, Snakemake)")
    fmt, folder, expected = REFUSED[name]
    videos = tmp_path / "videos"
    for shard in ("train/ok" if fmt == "kinetics" else "ok", folder):
        (videos / shard).mkdir(parents=True)
        (videos / shard / "v.avi").write_bytes(b"")  # a dry run decodes nothing
    params = tiny_params()
    params["datasets"]["real"] = {"format": fmt, "videos": str(videos), "splits": str(tmp_path)}
    work = tmp_path / "work"
    work.mkdir()
    _write_params(work, params)
    result = snakemake(work, "-n")
    text = output_of(result)
    assert result.returncode != 0
    assert f"params: datasets.real.videos: class folder {expected}" in text, text[-2000:]
    assert "Job stats" not in text and "Traceback" not in text
    assert not (work / "data").exists() and not (work / "logs").exists()


# The CLI's `vtdl splits`: labels no list can hold, refused in one line naming file and label.
def test_vtdl_splits_refuses_a_label_with_a_newline_in_one_line(tmp_path, fault, capsys):
    fault("hostile names", "newline in a Kinetics label (refused, CLI)")
    from split_files import make_kinetics

    split_dir, frames, _ = make_kinetics(tmp_path)
    train = split_dir / "kinetics_400_train.csv"
    with open(train, "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(["line\nbreak", "zz", 1, 11, "train", 0])
    status = cli.main(["splits", "--format", "kinetics", "--splits", str(split_dir),
                       "--frames", str(frames), "--out", str(tmp_path / "lists")])  # fmt: skip
    lines = [line for line in capsys.readouterr().err.splitlines() if "vtdl splits" in line]
    assert status == 2 and len(lines) == 1, lines  # (the rest is the progress bar)
    assert f"{train} line 8: bad class label 'line\\nbreak'" in lines[0], lines
    assert not (tmp_path / "lists").exists()


def test_vtdl_splits_refuses_whitespace_in_a_ucf101_class_by_name(tmp_path, fault, capsys):
    fault("hostile names", "whitespace in a UCF101 class (refused, CLI)")
    from split_files import make_ucf

    split_dir, frames, _ = make_ucf(tmp_path)
    index = split_dir / "classInd.txt"
    index.write_bytes(index.read_bytes().replace(b"3 YoYo", b"3 Yo Yo"))
    status = cli.main(["splits", "--format", "ucf101", "--splits", str(split_dir),
                       "--frames", str(frames), "--out", str(tmp_path / "lists")])  # fmt: skip
    lines = [line for line in capsys.readouterr().err.splitlines() if "vtdl splits" in line]
    assert status == 2 and len(lines) == 1, lines  # (the rest is the progress bar)
    assert f"{index} line 3: class 'Yo Yo' holds whitespace" in lines[0], lines
