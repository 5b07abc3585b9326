"""The embedded data set: official layouts, determinism, and classes that live only in motion."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from vtdl.data import synth
from vtdl.data.synth import class_names, generate, render_video
from vtdl.data.video import iter_frames, probe_fps
from vtdl.errors import VtdlError

TINY = {"frames_min": 8, "frames_max": 12, "height": 24, "width": 32, "fps": 25.0}


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# Class sets


def test_class_sets_are_large_disjoint_and_named_like_the_originals():
    ucf, hmdb = class_names("ucf101"), class_names("hmdb51")
    assert len(ucf) >= 10 and len(hmdb) >= 10
    assert len(set(ucf)) == len(ucf) and len(set(hmdb)) == len(hmdb)
    assert not set(ucf) & set(hmdb)
    assert {c.lower() for c in ucf}.isdisjoint({c.replace("_", "") for c in hmdb})
    assert all(re.fullmatch(r"(?:[A-Z][a-z]+)+", c) for c in ucf)
    assert all(re.fullmatch(r"[a-z]+(?:_[a-z]+)*", c) for c in hmdb)


def test_first_three_hmdb_classes_keep_the_split_file_sort_quirk():
    # HMDB51 numbers classes by sorted split-file names; `sword_exercise_test_split1.txt` sorts
    # before `sword_test_split1.txt` although `sword` < `sword_exercise`. A 3-class set must
    # already show the same disagreement.
    first = class_names("hmdb51")[:3]
    by_file = [f[: -len("_test_split1.txt")] for f in sorted(f"{c}_test_split1.txt" for c in first)]
    assert by_file != sorted(first)


def test_unknown_layout_and_class_are_reported():
    with pytest.raises(VtdlError, match="kinetics"):
        class_names("kinetics")
    with pytest.raises(VtdlError, match="'Juggle'"):
        render_video("Juggle", np.random.default_rng(0), 8, 24, 32)


# ---------------------------------------------------------------------------------------------
# render_video


def test_render_video_is_pure_with_the_requested_shape():
    a = render_video("MoveLeft", np.random.default_rng(5), 13, 30, 40)
    b = render_video("MoveLeft", np.random.default_rng(5), 13, 30, 40)
    c = render_video("MoveLeft", np.random.default_rng(6), 13, 30, 40)
    assert a.shape == (13, 30, 40, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_first_frame_does_not_depend_on_the_class():
    # The scene is drawn before, and independently of, the motion: the same generator state
    # gives every class the very same first frame, and only later frames differ.
    videos = {
        name: render_video(name, np.random.default_rng(11), 12, 48, 64)
        for name in class_names("ucf101") + class_names("hmdb51")
    }
    first = next(iter(videos.values()))
    for name, video in videos.items():
        assert np.array_equal(video[0], first[0]), name
    assert sum(not np.array_equal(v[-1], first[-1]) for v in videos.values()) == len(videos) - 1


def test_phases_change_speed_and_pause_briefly():
    for seed in range(20):
        level, phase = synth._phase_plan(np.random.default_rng(seed), 120)
        assert np.all(np.diff(phase) >= 0) and phase[0] == 0
        moving = level > 0
        for index in range(1, phase.max()):  # inner phases: full length, then maybe a pause
            frames = np.flatnonzero((phase == index) & moving)
            assert 8 <= len(frames) <= 20
            assert 0 <= np.count_nonzero((phase == index) & ~moving) <= 4
        speeds = [level[(phase == i) & moving][0] for i in range(phase.max() + 1)]
        categories = np.digitize(speeds, [0.7, 1.4])  # slow / normal / fast
        assert np.all(np.diff(categories) != 0)  # neighbouring phases never share a speed


def test_segments_of_one_video_differ_in_how_much_moves():
    # What lets a temporal negative be told apart by motion: within one video, the amount of
    # change between frames differs between 8-frame segments, for every class.
    ratios = {}
    for name in class_names("ucf101") + class_names("hmdb51"):
        for seed in range(3):
            video = render_video(name, np.random.default_rng(seed), 41, 48, 64).astype(np.int16)
            # Pixels that changed by more than 3.5 noise standard deviations: moving edges.
            changed = (np.abs(np.diff(video, axis=0)).max(-1) > 25).mean((1, 2))
            per_segment = changed[:40].reshape(5, 8).mean(1)
            ratios.setdefault(name, []).append(per_segment.max() / max(per_segment.min(), 1e-3))
    assert np.median([r for rs in ratios.values() for r in rs]) > 1.8
    assert all(np.mean(rs) > 1.3 for rs in ratios.values()), ratios


# Hand-made features for the key property. Single frame: a coarse thumbnail plus colour
# histograms. Motion: a dense Lucas-Kanade flow field, summarised per frame pair (mean flow,
# curl, divergence) and then over time (means, autocorrelations, turning sense, which axis
# leads, skew of speed changes).


def _box_sum(a: np.ndarray, r: int = 2) -> np.ndarray:
    """Sum over (2r+1)^2 neighbourhoods of the last two axes (zero padding)."""
    c = np.cumsum(np.pad(a, ((0, 0), (r + 1, r), (0, 0))), axis=1)
    a = c[:, 2 * r + 1 :] - c[:, : -2 * r - 1]
    c = np.cumsum(np.pad(a, ((0, 0), (0, 0), (r + 1, r))), axis=2)
    return c[:, :, 2 * r + 1 :] - c[:, :, : -2 * r - 1]


def _motion_features(video: np.ndarray) -> np.ndarray:
    grey = video.astype(np.float32).mean(-1) / 255.0
    mid = 0.5 * (grey[:-1] + grey[1:])
    ix, iy, it = np.gradient(mid, axis=2), np.gradient(mid, axis=1), grey[1:] - grey[:-1]
    sxx, syy, sxy = _box_sum(ix * ix), _box_sum(iy * iy), _box_sum(ix * iy)
    sxt, syt = _box_sum(ix * it), _box_sum(iy * it)
    det = sxx * syy - sxy * sxy + 1e-6
    u, v = (sxy * syt - syy * sxt) / det, (sxy * sxt - sxx * syt) / det
    change = _box_sum(it * it)
    weight = np.where(change > 0.02, change, 0.0)  # where something moves, not pixel noise
    total = weight.sum((1, 2)) + 1e-9

    def mean(field: np.ndarray) -> np.ndarray:
        return (field * weight).sum((1, 2)) / total

    flow_u, flow_v = mean(u), mean(v)
    curl = mean(np.gradient(v, axis=2) - np.gradient(u, axis=1))
    div = mean(np.gradient(u, axis=2) + np.gradient(v, axis=1))
    speed = np.hypot(flow_u, flow_v)
    features = [flow_u.mean(), flow_v.mean(), np.abs(flow_u).mean(), np.abs(flow_v).mean()]
    features += [curl.mean(), div.mean(), speed.mean()]
    for series in (flow_u, flow_v, div):
        centred = series - series.mean()
        features += [
            (centred[:-lag] * centred[lag:]).mean() / (centred.var() + 1e-9)
            for lag in (2, 3, 4, 6, 9, 12)
        ]
    for lag in (1, 3):
        turn = flow_u[:-lag] * flow_v[lag:] - flow_v[:-lag] * flow_u[lag:]
        features.append(turn.mean() / (speed.mean() ** 2 + 1e-9))
    lead_u, lead_v = np.abs(flow_u) - np.abs(flow_u).mean(), np.abs(flow_v) - np.abs(flow_v).mean()
    for lag in (2, 4, 6):
        lead = lead_u[:-lag] * lead_v[lag:] - lead_v[:-lag] * lead_u[lag:]
        features.append(lead.mean() / (lead_u.std() * lead_v.std() + 1e-9))
    change_speed = np.diff(speed)
    features.append((change_speed**3).mean() / ((change_speed**2).mean() ** 1.5 + 1e-9))
    return np.asarray(features)


def _frame_features(frame: np.ndarray) -> np.ndarray:
    image = frame.astype(np.float32) / 255.0
    height, width = image.shape[:2]
    thumbnail = image.reshape(6, height // 6, 8, width // 8, 3).mean((1, 3)).ravel()
    histograms = [np.histogram(image[..., c], bins=8, range=(0, 1))[0] for c in range(3)]
    return np.concatenate([thumbnail, np.concatenate(histograms) / (height * width)])


def _ridge_accuracy(train_x, train_y, test_x, test_y, penalty: float) -> float:
    """Top-1 accuracy of a one-vs-rest ridge classifier on standardised features."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    train_x = np.c_[(train_x - mu) / sd, np.ones(len(train_x))]
    test_x = np.c_[(test_x - mu) / sd, np.ones(len(test_x))]
    targets = np.eye(train_y.max() + 1)[train_y]
    weights = np.linalg.solve(
        train_x.T @ train_x + penalty * np.eye(train_x.shape[1]), train_x.T @ targets
    )
    return float(np.mean(np.argmax(test_x @ weights, 1) == test_y))


@pytest.mark.parametrize("fmt", ["ucf101", "hmdb51"])
def test_single_frames_are_at_chance_while_motion_separates_the_classes(fmt):
    classes = class_names(fmt)
    num_train, num_test, num_frames = 10, 6, 32
    data = {"train": ([], [], [], []), "test": ([], [], [], [])}
    for label, name in enumerate(classes):
        for index in range(num_train + num_test):
            rng = np.random.default_rng([2024, label, index])
            video = render_video(name, rng, num_frames, 48, 64)
            motion_x, motion_y, frame_x, frame_y = data["train" if index < num_train else "test"]
            motion_x.append(_motion_features(video))
            motion_y.append(label)
            for t in rng.choice(num_frames, 3, replace=False):
                frame_x.append(_frame_features(video[t]))
                frame_y.append(label)
    train = [np.asarray(a) for a in data["train"]]
    test = [np.asarray(a) for a in data["test"]]
    chance = 1.0 / len(classes)
    motion = _ridge_accuracy(train[0], train[1], test[0], test[1], penalty=1.0)
    frame = _ridge_accuracy(train[2], train[3], test[2], test[3], penalty=10.0)
    print(f"{fmt}: motion {motion:.3f}, single frame {frame:.3f}, chance {chance:.3f}")
    assert frame < chance + 0.1
    assert motion > 0.6


# ---------------------------------------------------------------------------------------------
# Layouts and split files


def test_ucf_test_groups_follow_the_official_blocks():
    assert [list(synth.ucf_test_groups(25, k)) for k in (1, 2, 3)] == [
        list(range(1, 8)),
        list(range(8, 15)),
        list(range(15, 22)),
    ]
    for groups in range(3, 60):
        blocks = [set(synth.ucf_test_groups(groups, k)) for k in (1, 2, 3)]
        assert all(blocks) and max(max(b) for b in blocks) <= groups
        assert not (blocks[0] & blocks[1] or blocks[1] & blocks[2] or blocks[0] & blocks[2])
        assert len(blocks[0]) == max(1, min(round(7 * groups / 25), groups // 3)), groups


def test_ucf_layout_and_split_files(tmp_path):
    videos, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    generate("ucf101", videos, splits, num_classes=3, groups=5, clips_per_group=2, **TINY)
    classes = class_names("ucf101")[:3]
    assert sorted(p.name for p in videos.iterdir()) == sorted(classes)
    on_disk = sorted(str(p.relative_to(videos)) for p in videos.rglob("*.avi"))
    assert len(on_disk) == 3 * 5 * 2
    for rel in on_disk:
        assert re.fullmatch(r"(\w+)/v_\1_g0[1-5]_c0[12]\.avi", rel), rel
    assert sorted(p.name for p in splits.iterdir()) == sorted(
        ["classInd.txt"] + [f"{kind}list0{k}.txt" for kind in ("train", "test") for k in (1, 2, 3)]
    )
    raw = (splits / "classInd.txt").read_bytes()
    assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == raw.count(b"\n") == 3
    ids = {}
    for line in raw.decode().splitlines():
        number, name = line.split(" ")
        ids[name] = int(number)
    assert ids == {name: i for i, name in enumerate(classes, start=1)}
    for split, test_group in ((1, 1), (2, 2), (3, 3)):  # 5 groups: blocks of one group
        train_raw = (splits / f"trainlist0{split}.txt").read_bytes()
        test_raw = (splits / f"testlist0{split}.txt").read_bytes()
        for raw in (train_raw, test_raw):
            assert raw.count(b"\r\n") == raw.count(b"\n") == len(raw.splitlines())
        train = [line.split(" ") for line in train_raw.decode().splitlines()]
        test = test_raw.decode().splitlines()
        assert all(len(fields) == 2 for fields in train)
        assert all(" " not in line for line in test)  # test lists carry no label
        for rel, label in train:
            assert ids[rel.split("/")[0]] == int(label)
        assert sorted([rel for rel, _ in train] + test) == on_disk
        assert {int(re.search(r"_g(\d\d)_", rel)[1]) for rel in test} == {test_group}
        assert len(test) == 3 * 2


def test_hmdb_layout_and_split_files(tmp_path):
    videos, splits = tmp_path / "hmdb51", tmp_path / "testTrainMulti_7030_splits"
    generate("hmdb51", videos, splits, num_classes=3, videos_per_class=10, **TINY)
    classes = class_names("hmdb51")[:3]
    assert sorted(p.name for p in videos.iterdir()) == sorted(classes)
    assert sorted(p.name for p in splits.iterdir()) == sorted(
        f"{name}_test_split{k}.txt" for name in classes for k in (1, 2, 3)
    )
    train_count, test_count, unused_count = synth.hmdb_split_counts(10)
    assert (train_count, test_count, unused_count) == (6, 3, 1)
    for name in classes:
        files = sorted(p.name for p in (videos / name).iterdir())
        assert len(files) == 10
        tags = r"[fhul]_(?:cm|nm)_np[123]_(?:fr|ba|le|ri)_(?:bad|med|goo)"
        for file in files:
            assert re.fullmatch(rf"synth\d{{4}}_{name}_{tags}_\d\.avi", file), file
        assignments = []
        for k in (1, 2, 3):
            raw = (splits / f"{name}_test_split{k}.txt").read_text()
            lines = raw.split("\n")
            assert lines[-1] == ""  # every line ends with a newline
            parsed = [re.fullmatch(r"(\S+\.avi) ([012]) ", line) for line in lines[:-1]]
            assert all(parsed), raw  # `<name>.avi <code> ` with the trailing space
            assert [m[1] for m in parsed] == files
            codes = [int(m[2]) for m in parsed]
            assert (codes.count(1), codes.count(2), codes.count(0)) == (6, 3, 1)
            assignments.append(codes)
        assert len({tuple(a) for a in assignments}) > 1  # the three splits are independent


def test_videos_decode_with_the_requested_size_length_and_rate(tmp_path):
    generate("hmdb51", tmp_path / "v", tmp_path / "s", num_classes=2, videos_per_class=6, **TINY)
    lengths = set()
    for path in sorted((tmp_path / "v").rglob("*.avi")):
        frames = list(iter_frames(path))
        assert TINY["frames_min"] <= len(frames) <= TINY["frames_max"]
        assert frames[0].shape == (TINY["height"], TINY["width"], 3)
        assert probe_fps(path) == pytest.approx(TINY["fps"])
        lengths.add(len(frames))
    assert len(lengths) > 1  # real videos vary in length


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    def make(name: str, seed: int) -> dict[str, str]:
        root = tmp_path / name
        generate("ucf101", root / "v", root / "s", num_classes=2, groups=3, clips_per_group=1,
                 seed=seed, **TINY)  # fmt: skip
        return _digests(root)

    first, again, other = make("a", 0), make("b", 0), make("c", 1)
    assert len(first) == 2 * 3 + 7
    assert first == again
    changed = [k for k in first if k.endswith(".avi") and first[k] != other[k]]
    assert len(changed) == 2 * 3


def test_fewer_classes_give_the_same_files_for_the_classes_kept(tmp_path):
    generate("hmdb51", tmp_path / "a" / "v", tmp_path / "a" / "s", num_classes=3,
             videos_per_class=4, **TINY)  # fmt: skip
    generate("hmdb51", tmp_path / "b" / "v", tmp_path / "b" / "s", num_classes=2,
             videos_per_class=4, **TINY)  # fmt: skip
    full, prefix = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert prefix and all(full[k] == prefix[k] for k in prefix)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_classes": 99}, "--num-classes: 99"),
        ({"groups": 2}, "--groups: 2"),
        ({"clips_per_group": 0}, "--clips-per-group"),
        ({"frames_max": 7}, "--frames-max: 7"),
        ({"frames_min": 4, "frames_max": 4}, "--frames-min: 4"),
        ({"height": 25}, "--height: 25"),
        ({"width": 8}, "--width: 8"),
        ({"fps": 0.0}, "--fps"),
    ],
)
def test_bad_settings_are_reported_by_flag(tmp_path, changes, message):
    settings = {**TINY, "groups": 3, "clips_per_group": 1, **changes}
    with pytest.raises(VtdlError, match=re.escape(message)):
        generate("ucf101", tmp_path / "v", tmp_path / "s", **settings)
    assert not (tmp_path / "v").exists()


def test_rerun_overwrites_but_leftovers_of_another_run_are_refused(tmp_path):
    videos, splits = tmp_path / "v", tmp_path / "s"
    settings = {"videos_per_class": 4, **TINY}
    generate("hmdb51", videos, splits, num_classes=3, **settings)
    before = _digests(tmp_path)
    generate("hmdb51", videos, splits, num_classes=3, **settings)  # same run again: fine
    assert _digests(tmp_path) == before
    # Fewer classes into the same folders would leave the third class behind as data.
    with pytest.raises(VtdlError, match=class_names("hmdb51")[2]):
        generate("hmdb51", videos, splits, num_classes=2, **settings)
    assert _digests(tmp_path) == before


def test_too_few_hmdb_videos_are_reported(tmp_path):
    with pytest.raises(VtdlError, match="--videos-per-class: 3"):
        generate("hmdb51", tmp_path / "v", tmp_path / "s", videos_per_class=3, **TINY)


def test_cli_flags_reach_generate(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    args = parser.parse_args(
        ["--format", "hmdb51", "--videos", str(tmp_path / "v"), "--splits", str(tmp_path / "s"),
         "--num-classes", "2", "--videos-per-class", "4", "--frames-min", "8", "--frames-max",
         "8", "--height", "16", "--width", "24", "--fps", "30", "--seed", "3"]
    )  # fmt: skip
    synth.run(args)
    files = sorted((tmp_path / "v").rglob("*.avi"))
    assert len(files) == 2 * 4
    frames = list(iter_frames(files[0]))
    assert len(frames) == 8 and frames[0].shape == (16, 24, 3)
    assert probe_fps(files[0]) == pytest.approx(30.0)
