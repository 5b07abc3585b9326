"""Clip loading: split lists, clip indices with wrap-around, and ClipDataset with workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vtdl.data.clips import (
    ClipDataset,
    VideoEntry,
    clip_indices,
    read_list,
    uniform_starts,
)
from vtdl.data.framestore import frame_file_path, write_frames
from vtdl.errors import VtdlError

HEADER = "path,label,class,frames\n"


def _write_list(path, rows, header=HEADER):
    path.write_text(header + "".join(rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------- read_list


def test_read_list_parses_rows_and_crlf(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b'path,label,class,frames\r\nA/v_a.avi,0,A,12\r\n"B/v, b.avi",3,B,7\r\n')
    assert read_list(path) == [
        VideoEntry("A/v_a.avi", 0, "A", 12),
        VideoEntry("B/v, b.avi", 3, "B", 7),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"line 1: expected header path,label,class,frames, got an empty file"),
        ("path,label,frames\n", r"line 1: expected header"),
        (HEADER + "A/a.avi,0,A,5\nA/b.avi,0,A\n", r"line 3: expected 4 fields, got 3"),
        (HEADER + "A/a.avi,x,A,5\n", r"line 2: label 'x' is not a non-negative integer"),
        (HEADER + "A/a.avi,1,A,-4\n", r"line 2: frames '-4' is not a non-negative integer"),
        (HEADER + ",1,A,4\n", r"line 2: empty path"),
    ],
)
def test_read_list_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(VtdlError, match=rf"bad\.csv {message}"):
        read_list(path)


def test_read_list_missing_file(tmp_path):
    with pytest.raises(VtdlError, match=r"nope\.csv: list file not found"):
        read_list(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------- indices


def test_clip_indices_long_video_no_wrap():
    np.testing.assert_array_equal(clip_indices(100, 10, 4, 3), [10, 13, 16, 19])


def test_clip_indices_short_video_loops():
    np.testing.assert_array_equal(clip_indices(5, 0, 8, 1), [0, 1, 2, 3, 4, 0, 1, 2])
    np.testing.assert_array_equal(clip_indices(5, 3, 4, 2), [3, 0, 2, 4])


def test_clip_indices_exactly_clip_length():
    np.testing.assert_array_equal(clip_indices(16, 0, 16, 1), np.arange(16))
    np.testing.assert_array_equal(clip_indices(61, 0, 16, 4), np.arange(0, 61, 4))


def test_clip_indices_rejects_nonsense():
    with pytest.raises(ValueError):
        clip_indices(0, 0, 4, 1)
    with pytest.raises(ValueError):
        clip_indices(10, 0, 4, 0)


def test_uniform_starts_cover_the_video():
    np.testing.assert_array_equal(uniform_starts(100, 16, 1, 1), [42])  # centred
    starts = uniform_starts(100, 16, 1, 10)
    assert starts[0] == 0 and starts[-1] == 100 - 16 and len(starts) == 10
    assert (np.diff(starts) > 0).all()
    np.testing.assert_array_equal(uniform_starts(10, 16, 2, 3), [0, 0, 0])  # short: loops
    np.testing.assert_array_equal(uniform_starts(31, 16, 2, 2), [0, 0])  # exactly one span


# ------------------------------------------------------------------------------- dataset


def _make_videos(tmp_path, lengths):
    """Raw frame files whose pixel value is the frame number; returns the list file."""
    root = tmp_path / "frames"
    rows = []
    for k, n in enumerate(lengths):
        rel = f"C{k % 2}/v{k}.avi"
        frames = [np.full((6, 8, 3), i, dtype=np.uint8) for i in range(n)]
        write_frames(frame_file_path(root, rel), frames, codec="raw")
        rows.append(f"{rel},{k % 2},C{k % 2},{n}\n")
    return _write_list(tmp_path / "list.csv", rows), root


def _frame_numbers(video: torch.Tensor) -> np.ndarray:
    """Frame numbers of a default-transformed (C, T, H, W) clip."""
    return np.rint(video[0, :, 0, 0].numpy() * 255).astype(int)


def test_random_clip_default_transform(tmp_path):
    list_file, root = _make_videos(tmp_path, [40])
    ds = ClipDataset(list_file, root, clip_len=5, stride=3)
    torch.manual_seed(0)
    starts = set()
    for _ in range(30):
        item = ds[0]
        video = item["video"]
        assert video.shape == (3, 5, 6, 8) and video.dtype == torch.float32
        assert 0.0 <= video.min() and video.max() <= 1.0
        numbers = _frame_numbers(video)
        assert (np.diff(numbers) == 3).all() and numbers[-1] <= 39  # fits: no wrap needed
        starts.add(int(numbers[0]))
        assert item["label"] == 0 and item["index"] == 0
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 40 - 13


def test_short_video_loops_and_custom_transform_gets_uint8(tmp_path):
    list_file, root = _make_videos(tmp_path, [3])
    seen = []

    def transform(clip):
        seen.append((clip.dtype, tuple(clip.shape)))
        return clip[:, 0, 0, 0].clone()

    ds = ClipDataset(list_file, root, clip_len=7, stride=1, transform=transform)
    assert ds[0]["video"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert seen == [(torch.uint8, (7, 6, 8, 3))]


def test_uniform_mode_stacks_clips(tmp_path):
    list_file, root = _make_videos(tmp_path, [50])
    ds = ClipDataset(list_file, root, clip_len=4, stride=2, mode="uniform", num_clips=3)
    video = ds[0]["video"]
    assert video.shape == (3, 3, 4, 6, 8)
    firsts = [_frame_numbers(clip)[0] for clip in video]
    assert firsts == list(uniform_starts(50, 4, 2, 3))  # [0, 21, 43]
    assert ds[0]["video"].equal(video)  # uniform mode is deterministic


def test_dataset_is_deterministic_with_workers(tmp_path):
    list_file, root = _make_videos(tmp_path, [200, 150, 180, 90, 250, 120])
    ds = ClipDataset(list_file, root, clip_len=4, stride=2)

    def run(seed):
        loader = DataLoader(
            ds, batch_size=2, num_workers=2, generator=torch.Generator().manual_seed(seed)
        )
        return [
            (batch["index"].tolist(), [_frame_numbers(v)[0] for v in batch["video"]])
            for batch in loader
        ]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert sorted(i for indices, _ in first for i in indices) == list(range(6))


def test_missing_frame_file_names_list_and_path(tmp_path):
    list_file, root = _make_videos(tmp_path, [10])
    _write_list(list_file, ["C0/v0.avi,0,C0,10\n", "C1/gone.avi,1,C1,10\n"])
    ds = ClipDataset(list_file, root, clip_len=2)
    ds[0]
    with pytest.raises(
        VtdlError,
        match=r"list\.csv: video 'C1/gone\.avi': frame file not found: "
        r".*gone\.avi\.frames",
    ):
        ds[1]


def test_dataset_argument_checks(tmp_path):
    list_file, root = _make_videos(tmp_path, [10])
    with pytest.raises(ValueError, match="mode"):
        ClipDataset(list_file, root, mode="dense")
    with pytest.raises(ValueError, match="num_clips"):
        ClipDataset(list_file, root, num_clips=3)
    empty = _write_list(tmp_path / "empty.csv", [])
    with pytest.raises(VtdlError, match=r"empty\.csv: the list has no videos"):
        ClipDataset(empty, root)


def test_persistent_workers_draw_the_epoch_the_sampler_names(tmp_path):
    """One loader with a persistent worker over several epochs gives exactly the triplets of a
    fresh in-process loader per epoch: the epoch travels in the sampler's keys, and each
    epoch's order is the seeded permutation of (seed, epoch)."""
    from torch.utils.data import DataLoader

    from vtdl import seeds
    from vtdl.data.triplets import EpochShuffle, TripletDataset

    list_file, root = _make_videos(tmp_path, [30, 24, 40, 33])
    dataset = TripletDataset(list_file, root, 4, 2, lambda clip, gen: clip.float(), seed=3)
    sampler = EpochShuffle(len(dataset), seed=3)
    persistent = DataLoader(
        dataset, batch_size=2, sampler=sampler, num_workers=1, persistent_workers=True
    )
    for epoch in range(3):
        sampler.epoch = epoch
        got = [batch["anchor"] for batch in persistent]
        dataset.set_epoch(epoch)
        order = torch.randperm(4, generator=seeds.torch_generator(3, seeds.EPOCH_ORDER, epoch))
        expected = [dataset[int(i)]["anchor"] for i in order]
        assert torch.equal(torch.cat(got), torch.stack(expected))
    assert [epoch for epoch, _ in EpochShuffle(4, 3)] == [0, 0, 0, 0]  # epoch 0 until set
