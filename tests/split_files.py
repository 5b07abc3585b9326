"""Writers of official split files and extraction manifests (no videos needed), with the real
formats' quirks: CRLF and BOM (UCF101), trailing spaces (HMDB51), quoted labels (Kinetics)."""

import csv
import json
from pathlib import Path


def write_manifest(frames_dir, shard, fmt, videos, skipped=()):
    """manifest.json of one shard; `videos` maps path -> frame count, `skipped` path -> error."""
    skipped = dict(skipped)
    data = {
        "format": fmt,
        "shard": shard,
        "settings": {"short_side": 40, "codec": "jpeg", "quality": 90},
        "videos": [{"path": p, "frames": n, "fps": 25.0} for p, n in sorted(videos.items())],
        "skipped": [{"path": p, "error": e} for p, e in sorted(skipped.items())],
    }
    path = Path(frames_dir) / shard / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_manifests(frames_dir, fmt, videos, skipped=(), levels=1):
    """One manifest per shard (first `levels` path components), like `vtdl extract` writes."""
    shards = {}
    for path, n in videos.items():
        shards.setdefault("/".join(path.split("/")[:levels]), ({}, {}))[0][path] = n
    for path, error in dict(skipped).items():
        shards.setdefault("/".join(path.split("/")[:levels]), ({}, {}))[1][path] = error
    for shard, (vids, skips) in shards.items():
        write_manifest(frames_dir, shard, fmt, vids, skips)


def write_crlf(path, lines, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{line}\r\n" for line in lines)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())


UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


def ucf_name(cls, group, clip):
    # UCF101's quirk: the folder is HandstandPushups, the files say HandStandPushups.
    stem = "HandStandPushups" if cls == "HandstandPushups" else cls
    return f"{cls}/v_{stem}_g{group:02d}_c{clip:02d}.avi"


def make_ucf(tmp_path, groups=3, clips=2, splits=(1, 2, 3)):
    """ucfTrainTestlist/ where split k tests group k; returns (split dir, frames dir, videos)."""
    split_dir = tmp_path / "ucfTrainTestlist"
    write_crlf(
        split_dir / "classInd.txt", [f"{i} {c}" for i, c in enumerate(UCF_CLASSES, 1)], bom=True
    )
    videos = {
        ucf_name(c, g, k): 10 * g + k
        for c in UCF_CLASSES
        for g in range(1, groups + 1)
        for k in range(1, clips + 1)
    }
    for k in splits:
        train = [
            f"{ucf_name(c, g, n)} {i} "
            for i, c in enumerate(UCF_CLASSES, 1)
            for g in range(1, groups + 1)
            if g != k
            for n in range(1, clips + 1)
        ]
        test = [ucf_name(c, k, n) for c in UCF_CLASSES for n in range(1, clips + 1)]
        write_crlf(split_dir / f"trainlist0{k}.txt", train + [""])  # trailing blank line
        write_crlf(split_dir / f"testlist0{k}.txt", test)
    frames = tmp_path / "frames"
    write_manifests(frames, "ucf101", videos)
    return split_dir, frames, videos


HMDB_CLASSES = ["brush_hair", "sword", "sword_exercise"]


def make_hmdb(tmp_path, per_class=6):
    """testTrainMulti_7030_splits/: codes 1,1,1,2,2,0 rotated by split; trailing spaces, LF."""
    split_dir = tmp_path / "testTrainMulti_7030_splits"
    split_dir.mkdir(parents=True)
    videos = {}
    base = [1, 1, 1, 2, 2, 0]
    for c in HMDB_CLASSES:
        names = [f"{c.capitalize()}Clip_{c}_f_nm_np1_fr_med_{i}.avi" for i in range(per_class)]
        for name in names:
            videos[f"{c}/{name}"] = 30
        for k in (1, 2, 3):
            codes = base[k - 1 :] + base[: k - 1]
            text = "".join(f"{name} {code} \n" for name, code in zip(names, codes, strict=True))
            (split_dir / f"{c}_test_split{k}.txt").write_text(text)
    frames = tmp_path / "frames"
    write_manifests(frames, "hmdb51", videos)
    return split_dir, frames, videos


K_TRAIN = [
    ("abseiling", "0347ZoDXyP0", 95, 105),
    ("abseiling", "-0aB_cD1eF2", 4, 14),
    ("passing American football (in game)", "k1", 10, 20),
    ('eating "hotdog", fast', "k2", 0, 10),
    ("zumba", "k3", 1, 11),
]
K_VAL = [
    ("abseiling", "v1", 7, 17),
    ("passing American football (in game)", "v2", 30, 40),
    ('eating "hotdog", fast', "v3", 2, 12),
]


def k_file(ytid, start, end):
    return f"{ytid}_{start:06d}_{end:06d}.mp4"


def write_k_csv(path, rows, split, is_cc=True):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)  # quotes labels with commas and quotes, like the official files
        writer.writerow(
            ["label", "youtube_id", "time_start", "time_end", "split"]
            + (["is_cc"] if is_cc else [])
        )
        for label, ytid, start, end in rows:
            writer.writerow([label, ytid, start, end, split] + (["0"] if is_cc else []))


def make_kinetics(tmp_path, val_folder="val"):
    """CSVs + manifests; folders: spaces -> '_' for football, the label itself elsewhere."""
    split_dir = tmp_path / "k400"
    split_dir.mkdir()
    write_k_csv(split_dir / "kinetics_400_train.csv", K_TRAIN, "train")
    write_k_csv(split_dir / "kinetics_400_val.csv", K_VAL, "val", is_cc=False)

    def folder(label):
        return label.replace(" ", "_") if "football" in label else label

    videos = {f"train/{folder(lab)}/{k_file(*rest)}": 100 for lab, *rest in K_TRAIN}
    videos |= {f"{val_folder}/{folder(lab)}/{k_file(*rest)}": 50 for lab, *rest in K_VAL}
    frames = tmp_path / "frames"
    write_manifests(frames, "kinetics", videos, levels=2)
    return split_dir, frames, videos
