"""`vtdl splits`: official split files (with their real quirks) -> canonical lists."""

import argparse
import csv

import pytest
from split_files import (
    K_TRAIN,
    UCF_CLASSES,
    k_file,
    make_hmdb,
    make_kinetics,
    make_ucf,
    ucf_name,
    write_crlf,
    write_k_csv,
    write_manifest,
    write_manifests,
)

from vtdl.data import splits as sp
from vtdl.errors import VtdlError

# --------------------------------------------------------------------------------------------
# Fixture writers: official-format split files and extraction manifests (no videos needed).


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def error_of(fn, *args, **kwargs):
    with pytest.raises(VtdlError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# UCF101


def test_ucf101_lists_with_crlf_bom_no_label_tests_and_handstand_quirk(tmp_path):
    split_dir, frames, videos = make_ucf(tmp_path)
    out = tmp_path / "out"
    summary = sp.build_splits("ucf101", split_dir, frames, out)

    assert summary["classes"] == 3
    assert summary["splits"] == {k: {"train": 12, "test": 6} for k in (1, 2, 3)}
    assert read_csv(out / "classes.csv") == [
        ["label", "class"],
        ["0", "ApplyEyeMakeup"],
        ["1", "HandstandPushups"],
        ["2", "YoYo"],
    ]
    test1 = read_csv(out / "split1" / "test.csv")
    assert test1[0] == ["path", "label", "class", "frames"]
    assert test1[1:] == sorted(
        [ucf_name(c, 1, n), str(label), c, str(videos[ucf_name(c, 1, n)])]
        for label, c in enumerate(UCF_CLASSES)
        for n in (1, 2)
    )
    # The label comes from the folder; the file name keeps its own spelling.
    assert [
        "HandstandPushups/v_HandStandPushups_g01_c02.avi",
        "1",
        "HandstandPushups",
        "12",
    ] in test1
    train2 = read_csv(out / "split2" / "train.csv")[1:]
    assert [row[0] for row in train2] == sorted(row[0] for row in train2)
    assert {int(row[0].split("_g")[1][:2]) for row in train2} == {1, 3}
    assert read_csv(out / "dropped.csv") == [["path", "reason"]]
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.csv",
        "dropped.csv",
        "split1",
        "split2",
        "split3",
    ]


def test_ucf101_parser_returns_items_with_source_and_line(tmp_path):
    split_dir, _, _ = make_ucf(tmp_path)
    classes, splits = sp.parse_ucf101(tmp_path)  # the parent of ucfTrainTestlist/ works too
    assert classes == UCF_CLASSES
    train, test = splits[1]
    assert train[0] == sp.ListedVideo(
        ucf_name("ApplyEyeMakeup", 2, 1), "ApplyEyeMakeup", str(split_dir / "trainlist01.txt"), 1
    )
    assert test[-1].line == 6 and test[-1].class_name == "YoYo"


def test_ucf101_falls_back_to_a_unique_case_insensitive_match(tmp_path):
    split_dir, frames, videos = make_ucf(tmp_path, splits=(1,))
    listed = "HandstandPushups/v_HandstandPushups_g01_c01.avi"  # as a careless copy would say
    lines = [ucf_name(c, 1, n) for c in UCF_CLASSES for n in (1, 2)]
    write_crlf(
        split_dir / "testlist01.txt",
        [listed if x == ucf_name("HandstandPushups", 1, 1) else x for x in lines],
    )
    out = tmp_path / "out"
    sp.build_splits("ucf101", split_dir, frames, out)
    paths = [row[0] for row in read_csv(out / "split1" / "test.csv")[1:]]
    assert ucf_name("HandstandPushups", 1, 1) in paths and listed not in paths


def test_ucf101_uses_only_splits_with_both_files(tmp_path, capsys):
    split_dir, frames, _ = make_ucf(tmp_path)
    (split_dir / "testlist03.txt").unlink()
    (split_dir / "trainlist02.txt").unlink()
    summary = sp.build_splits("ucf101", split_dir, frames, tmp_path / "out")
    assert list(summary["splits"]) == [1]
    assert not (tmp_path / "out" / "split2").exists()
    assert "ignoring split 3" in capsys.readouterr().err

    (split_dir / "trainlist01.txt").unlink()
    message = error_of(sp.parse_ucf101, split_dir)
    assert str(split_dir) in message and "no UCF101 split" in message


def bad_ucf_line(tmp_path, file_name, line_no, text):
    """The UCF fixture with line `line_no` of `file_name` replaced by `text`."""
    split_dir, frames, _ = make_ucf(tmp_path, splits=(1,))
    path = split_dir / file_name
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    write_crlf(path, lines)
    return split_dir, frames


@pytest.mark.parametrize(
    ("file_name", "line_no", "text", "expected"),
    [
        (
            "trainlist01.txt",
            3,
            "HandstandPushups/v_HandStandPushups_g02_c01.avi 3",
            "class id 3 (YoYo) disagrees with folder 'HandstandPushups'",
        ),
        (
            "trainlist01.txt",
            2,
            "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c02.avi 102",
            "unknown class id 102",
        ),
        ("trainlist01.txt", 4, "Juggling/v_Juggling_g02_c01.avi 1", "unknown class 'Juggling'"),
        ("testlist01.txt", 5, "Juggling/v_Juggling_g01_c01.avi", "unknown class 'Juggling'"),
        ("trainlist01.txt", 2, "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c02.avi", "expected"),
        ("trainlist01.txt", 2, "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c02.avi one", "not an integer"),
        ("testlist01.txt", 2, "ApplyEyeMakeup/a.avi 1 2", "expected"),
        ("trainlist01.txt", 2, "../ApplyEyeMakeup/x.avi 1", "escapes the videos root"),
        ("trainlist01.txt", 2, "/data/ApplyEyeMakeup/x.avi 1", "absolute path"),
        ("testlist01.txt", 2, "ApplyEyeMakeup\\v_ApplyEyeMakeup_g01_c02.avi", "backslash"),
        ("testlist01.txt", 2, "UCF-101/ApplyEyeMakeup/x.avi", "no single class folder"),
    ],
)
def test_ucf101_bad_lines_name_file_and_line(tmp_path, file_name, line_no, text, expected):
    split_dir, frames = bad_ucf_line(tmp_path, file_name, line_no, text)
    message = error_of(sp.build_splits, "ucf101", split_dir, frames, tmp_path / "out")
    assert f"{split_dir / file_name} line {line_no}: " in message
    assert expected in message
    assert not (tmp_path / "out").exists()


def test_ucf101_duplicate_and_train_test_overlap_name_both_lines(tmp_path):
    split_dir, frames = bad_ucf_line(
        tmp_path, "trainlist01.txt", 4, "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 1"
    )
    message = error_of(sp.parse_ucf101, split_dir)
    train = split_dir / "trainlist01.txt"
    assert f"{train} line 4: duplicate of {train} line 1" in message

    split_dir, frames = bad_ucf_line(
        tmp_path / "b", "trainlist01.txt", 4, "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c02.avi 1"
    )
    message = error_of(sp.parse_ucf101, split_dir)
    assert f"{split_dir / 'testlist01.txt'} line 2: " in message
    assert f"also listed for training ({split_dir / 'trainlist01.txt'} line 4)" in message


def test_ucf101_many_problems_are_listed_together_with_a_count(tmp_path):
    split_dir, frames, _ = make_ucf(tmp_path, groups=6, splits=(1,))
    lines = (split_dir / "trainlist01.txt").read_text().splitlines()
    write_crlf(split_dir / "trainlist01.txt", [f"Nope/x{i}.avi 1" for i in range(25)] + lines)
    message = error_of(sp.parse_ucf101, split_dir)
    assert message.startswith("25 problems in the UCF101 split files:")
    assert "trainlist01.txt line 1: unknown class 'Nope'" in message
    assert "trainlist01.txt line 20:" in message and "line 21:" not in message
    assert "... and 5 more" in message


def test_ucf101_missing_class_index_or_empty_list(tmp_path):
    split_dir, _, _ = make_ucf(tmp_path)
    write_crlf(split_dir / "testlist02.txt", ["", "  "])
    message = error_of(sp.parse_ucf101, split_dir)
    assert message == f"{split_dir / 'testlist02.txt'}: empty split file"

    write_crlf(split_dir / "classInd.txt", ["1 ApplyEyeMakeup", "3 YoYo", "2"])
    message = error_of(sp.parse_ucf101, split_dir)
    assert f"{split_dir / 'classInd.txt'} line 3: expected '<class id> <class>'" in message

    (split_dir / "classInd.txt").unlink()
    message = error_of(sp.parse_ucf101, split_dir)
    assert "classInd.txt: missing" in message


def test_missing_video_is_an_error_or_dropped_with_on_missing_skip(tmp_path, capsys):
    split_dir, frames, videos = make_ucf(tmp_path, splits=(1,))
    gone = ucf_name("YoYo", 2, 2)
    del videos[gone]
    write_manifests(frames, "ucf101", videos)
    message = error_of(sp.build_splits, "ucf101", split_dir, frames, tmp_path / "out")
    assert message.startswith(
        f"{split_dir / 'trainlist01.txt'} line 10: '{gone}' is in no manifest"
    )
    assert "--on-missing skip" in message

    summary = sp.build_splits("ucf101", split_dir, frames, tmp_path / "out", on_missing="skip")
    assert summary["splits"][1] == {"train": 11, "test": 6}
    assert summary["dropped"]["missing"] == 1
    dropped = read_csv(tmp_path / "out" / "dropped.csv")
    assert dropped[1][0] == gone and dropped[1][1].startswith("missing")
    assert f"dropped 1 listed video(s) that were not extracted: {gone}" in capsys.readouterr().err


def test_videos_skipped_at_extraction_are_dropped_and_reported(tmp_path, capsys):
    split_dir, frames, videos = make_ucf(tmp_path)
    broken = [ucf_name("YoYo", 1, 2), ucf_name("YoYo", 3, 1)]
    for path in broken:
        del videos[path]
    write_manifests(frames, "ucf101", videos, {p: "truncated: moov atom not found" for p in broken})
    out = tmp_path / "out"
    summary = sp.build_splits("ucf101", split_dir, frames, out)
    assert summary["dropped"]["skipped"] == 2
    assert summary["splits"][1] == {"train": 11, "test": 5}
    assert summary["splits"][2] == {"train": 10, "test": 6}
    assert read_csv(out / "dropped.csv") == [
        ["path", "reason"],
        *[[p, "skipped at extraction: truncated: moov atom not found"] for p in sorted(broken)],
    ]
    listed = {
        row[0]
        for k in (1, 2, 3)
        for name in ("train", "test")
        for row in read_csv(out / f"split{k}" / f"{name}.csv")
    }
    assert not listed & set(broken)
    err = capsys.readouterr().err
    assert "dropped 2 listed video(s) that extraction skipped" in err and broken[0] in err


def test_ambiguous_case_insensitive_matches_and_empty_videos(tmp_path, capsys):
    split_dir, frames, videos = make_ucf(tmp_path, splits=(1,))
    listed = ucf_name("YoYo", 1, 1)
    del videos[listed]
    videos[listed.upper()] = 5
    videos[listed.replace("YoYo/v_YoYo", "YoYo/v_yoyo")] = 5
    write_manifests(frames, "ucf101", videos)
    message = error_of(sp.build_splits, "ucf101", split_dir, frames, tmp_path / "out")
    assert message.startswith(f"{split_dir / 'testlist01.txt'} line 5: '{listed}' matches [")

    del videos[listed.upper()]
    (frames / "YOYO" / "manifest.json").unlink()  # that shard is gone
    empty = ucf_name("YoYo", 2, 1)
    videos[empty] = 0
    write_manifests(frames, "ucf101", videos)
    summary = sp.build_splits("ucf101", split_dir, frames, tmp_path / "out")
    assert summary["dropped"] == {"skipped": 0, "missing": 0, "empty": 1}
    test = read_csv(tmp_path / "out" / "split1" / "test.csv")
    assert [listed.replace("YoYo/v_YoYo", "YoYo/v_yoyo"), "2", "YoYo", "5"] in test
    assert read_csv(tmp_path / "out" / "dropped.csv")[1] == [empty, "extracted with 0 frames"]
    assert "extracted with 0 frames" in capsys.readouterr().err


def test_failed_run_keeps_the_previous_output(tmp_path):
    split_dir, frames, _ = make_ucf(tmp_path, splits=(1,))
    out = tmp_path / "out"
    sp.build_splits("ucf101", split_dir, frames, out)
    before = (out / "split1" / "train.csv").read_bytes()
    write_crlf(split_dir / "testlist01.txt", ["Nope/x.avi"])
    with pytest.raises(VtdlError):
        sp.build_splits("ucf101", split_dir, frames, out)
    assert (out / "split1" / "train.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "out", "ucfTrainTestlist"]


# --------------------------------------------------------------------------------------------
# Manifests


def test_manifests_are_required_and_checked(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / ".Shard.abc.tmp").mkdir()  # a killed extraction's temporary is not a shard
    (frames / ".Shard.abc.tmp" / "manifest.json").write_text("{}")
    message = error_of(sp.load_manifests, frames)
    assert message == f"{frames}: no manifest.json under it (run vtdl extract first)"
    assert "not found" in error_of(sp.load_manifests, tmp_path / "nope")

    write_manifest(frames, "A", "ucf101", {"A/a.avi": 3}, {"A/b.avi": "bad"})
    loaded = sp.load_manifests(frames, "ucf101")
    assert loaded.frames == {"A/a.avi": 3} and loaded.skipped == {"A/b.avi": "bad"}
    assert "expected 'hmdb51'" in error_of(sp.load_manifests, frames, "hmdb51")

    write_manifest(frames, "B", "ucf101", {"A/a.avi": 3})
    message = error_of(sp.load_manifests, frames)
    assert str(frames / "B" / "manifest.json") in message and "also in" in message

    (frames / "B" / "manifest.json").write_text('{"videos": [{"path": "B/x.avi"}]}')
    assert "key 'videos[0].frames'" in error_of(sp.load_manifests, frames)
    (frames / "B" / "manifest.json").write_text('{"videos": [')
    assert f"{frames / 'B' / 'manifest.json'}: not a readable JSON" in error_of(
        sp.load_manifests, frames
    )


# --------------------------------------------------------------------------------------------
# HMDB51


def test_hmdb51_ids_follow_sorted_split_file_names_and_codes(tmp_path):
    split_dir, frames, _ = make_hmdb(tmp_path)
    classes, splits = sp.parse_hmdb51(tmp_path)
    assert classes == ["brush_hair", "sword_exercise", "sword"]  # not sorted(class names)
    train, test = splits[1]
    assert [item.path for item in train[:3]] == [
        f"brush_hair/Brush_hairClip_brush_hair_f_nm_np1_fr_med_{i}.avi" for i in range(3)
    ]
    assert (train[0].source, train[0].line) == (str(split_dir / "brush_hair_test_split1.txt"), 1)

    out = tmp_path / "out"
    summary = sp.build_splits("hmdb51", split_dir, frames, out)
    assert summary["splits"] == {k: {"train": 9, "test": 6} for k in (1, 2, 3)}
    assert read_csv(out / "classes.csv")[1:] == [
        ["0", "brush_hair"],
        ["1", "sword_exercise"],
        ["2", "sword"],
    ]
    rows = read_csv(out / "split2" / "test.csv")[1:]
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    sword = [r for r in rows if r[2] == "sword"]
    # split 2 rotates the codes: 1,1,2,2,0,1 -> test clips 2 and 3; clip 4 (code 0) is unused
    assert [(r[0].rsplit("_", 1)[1], r[1]) for r in sword] == [("2.avi", "2"), ("3.avi", "2")]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a.avi 3", "code '3' is not 0, 1 or 2"),
        ("a.avi x", "code 'x' is not an integer"),
        ("a.avi", "expected '<name>.avi <0|1|2>'"),
        ("../a.avi 1", "escapes the videos root"),
        ("sub/a.avi 1", "not a plain file name"),
    ],
)
def test_hmdb51_bad_lines_name_file_and_line(tmp_path, line, expected):
    split_dir, _, _ = make_hmdb(tmp_path)
    path = split_dir / "sword_test_split2.txt"
    lines = path.read_text().splitlines()
    lines[3] = line + "  "
    path.write_text("\n".join(lines) + "\n")
    message = error_of(sp.parse_hmdb51, split_dir)
    assert message.startswith(f"{path} line 4: ")
    assert expected in message


def test_hmdb51_every_class_needs_every_split_file(tmp_path):
    split_dir, _, _ = make_hmdb(tmp_path)
    (split_dir / "sword_test_split3.txt").unlink()
    message = error_of(sp.parse_hmdb51, split_dir)
    assert str(split_dir / "sword_test_split3.txt") in message and "missing" in message

    for path in split_dir.iterdir():
        path.unlink()
    assert "no HMDB51 split files" in error_of(sp.parse_hmdb51, split_dir)


def test_hmdb51_duplicate_line_names_both_lines(tmp_path):
    split_dir, _, _ = make_hmdb(tmp_path)
    path = split_dir / "brush_hair_test_split1.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[3]]) + "\n")  # same video again, as test (code 2)
    message = error_of(sp.parse_hmdb51, split_dir)
    assert f"{path} line 7: duplicate of {path} line 4" in message


# --------------------------------------------------------------------------------------------
# Kinetics-400


def test_kinetics_csvs_with_quoted_labels_and_underscore_folders(tmp_path):
    split_dir, frames, _ = make_kinetics(tmp_path, val_folder="validate")
    out = tmp_path / "out"
    summary = sp.build_splits("kinetics", split_dir, frames, out)
    classes = sorted({row[0] for row in K_TRAIN})
    assert read_csv(out / "classes.csv")[1:] == [[str(i), c] for i, c in enumerate(classes)]
    assert summary["splits"] == {1: {"train": 5, "test": 3}}
    train = read_csv(out / "split1" / "train.csv")[1:]
    football = "passing American football (in game)"
    assert [
        f"train/passing_American_football_(in_game)/{k_file('k1', 10, 20)}",
        str(classes.index(football)),
        football,
        "100",
    ] in train
    assert [
        f'train/eating "hotdog", fast/{k_file("k2", 0, 10)}',
        str(classes.index('eating "hotdog", fast')),
        'eating "hotdog", fast',
        "100",
    ] in train
    test = read_csv(out / "split1" / "test.csv")[1:]
    assert {row[0].split("/")[0] for row in test} == {"validate"}
    assert [row[0] for row in train] == sorted(row[0] for row in train)


def test_kinetics_missing_videos_error_or_skip(tmp_path):
    split_dir, frames, videos = make_kinetics(tmp_path)
    write_k_csv(
        split_dir / "kinetics_400_train.csv", [*K_TRAIN, ("zumba", "deletedYT01", 5, 15)], "train"
    )
    message = error_of(sp.build_splits, "kinetics", split_dir, frames, tmp_path / "out")
    assert message.startswith(
        f"{split_dir / 'kinetics_400_train.csv'} line 7: "
        f"'train/zumba/{k_file('deletedYT01', 5, 15)}' is in no manifest"
    )
    summary = sp.build_splits("kinetics", split_dir, frames, tmp_path / "out", "skip")
    assert summary["splits"][1]["train"] == 5 and summary["dropped"]["missing"] == 1


def test_kinetics_csv_problems_name_file_and_line(tmp_path):
    split_dir, frames, _ = make_kinetics(tmp_path)
    val = split_dir / "kinetics_400_val.csv"
    with open(val, "a", encoding="utf-8") as f:
        f.write("juggling balls,v9,1,11,val\nabseiling,v10,one,11,val\nabseiling,v11\n")
    message = error_of(sp.parse_kinetics, split_dir)
    assert message.startswith("3 problems in the Kinetics split CSVs:")
    assert f"{val} line 5: unknown class 'juggling balls'" in message
    assert f"{val} line 6: time_start/time_end are not whole seconds" in message
    assert f"{val} line 7: expected 5 fields, got 2" in message

    write_k_csv(split_dir / "train.csv", K_TRAIN, "train")
    assert "more than one Kinetics split CSV named kinetics_400_train.csv" in error_of(
        sp.parse_kinetics, split_dir
    )
    (split_dir / "train.csv").unlink()

    val.write_text("youtube_id,time_start\nx,1\n")
    assert f"{val} line 1: header lacks ['label', 'time_end']" in error_of(
        sp.parse_kinetics, split_dir
    )
    val.unlink()
    assert "no Kinetics split CSV named kinetics_400_val.csv" in error_of(
        sp.parse_kinetics, split_dir
    )


def test_kinetics_without_csvs_uses_the_extracted_folders(tmp_path, capsys):
    split_dir, frames, videos = make_kinetics(tmp_path)
    for path in split_dir.iterdir():
        path.unlink()
    out = tmp_path / "out"
    summary = sp.build_splits("kinetics", split_dir, frames, out)
    assert summary["splits"] == {1: {"train": 5, "test": 3}}
    folders = sorted({p.split("/")[1] for p in videos if p.startswith("train/")})
    assert read_csv(out / "classes.csv")[1:] == [[str(i), c] for i, c in enumerate(folders)]
    assert "no split CSVs" in capsys.readouterr().err
    assert "no Kinetics split CSVs" in error_of(sp.parse_kinetics, split_dir)


# --------------------------------------------------------------------------------------------
# Real-size-like UCF101 and the CLI


def test_real_size_ucf101_counts_per_split(tmp_path):
    """101 classes x 25 groups x 4-7 clips, laid out so the totals match the official lists."""
    classes = [f"Action{i:03d}" for i in range(101)]
    classes[36] = "HandstandPushups"  # id 37, as in the official classInd.txt
    # Clips per group block (g01-07, g08-14, g15-21, g22-25) summing to the official test sizes.
    block_totals = [3783, 3734, 3696, 13320 - 3783 - 3734 - 3696]
    blocks = [range(1, 8), range(8, 15), range(15, 22), range(22, 26)]
    clips = {}
    for total, groups in zip(block_totals, blocks, strict=True):
        slots = [(c, g) for c in classes for g in groups]
        base, extra = divmod(total, len(slots))
        clips |= {slot: base + (i < extra) for i, slot in enumerate(slots)}
    videos = {
        ucf_name(c, g, n): 100 for (c, g), count in clips.items() for n in range(1, count + 1)
    }
    split_dir = tmp_path / "ucfTrainTestlist"
    write_crlf(split_dir / "classInd.txt", [f"{i} {c}" for i, c in enumerate(classes, 1)])
    for k in (1, 2, 3):
        tested = blocks[k - 1]
        write_crlf(
            split_dir / f"trainlist0{k}.txt",
            [
                f"{p} {classes.index(p.split('/')[0]) + 1}"
                for p in videos
                if int(p.split("_g")[1][:2]) not in tested
            ],
        )
        write_crlf(
            split_dir / f"testlist0{k}.txt",
            [p for p in videos if int(p.split("_g")[1][:2]) in tested],
        )
    write_manifests(tmp_path / "frames", "ucf101", videos)
    summary = sp.build_splits("ucf101", split_dir, tmp_path / "frames", tmp_path / "out")
    assert summary["classes"] == 101
    assert summary["splits"] == {
        1: {"train": 9537, "test": 3783},
        2: {"train": 9586, "test": 3734},
        3: {"train": 9624, "test": 3696},
    }
    for k in (1, 2, 3):
        test = read_csv(tmp_path / "out" / f"split{k}" / "test.csv")[1:]
        assert len(test) == summary["splits"][k]["test"]
        assert {row[2] for row in test} == set(classes)


def test_cli_arguments_and_run(tmp_path, capsys):
    split_dir, frames, _ = make_ucf(tmp_path)
    parser = argparse.ArgumentParser()
    sp.add_arguments(parser)
    args = parser.parse_args(
        [
            "--format",
            "ucf101",
            "--splits",
            str(split_dir),
            "--frames",
            str(frames),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert args.on_missing == "error"
    sp.run(args)
    assert "3 classes; split1 12 train / 6 test" in capsys.readouterr().err
    assert (tmp_path / "out" / "split3" / "test.csv").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args(
            ["--format", "kinetics700", "--splits", "a", "--frames", "b", "--out", "c"]
        )
