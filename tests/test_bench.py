"""The GPU benchmark keeps working without a GPU: `bench/gpu.py --tiny` runs its whole path
(step figures, FLOP count, end-to-end `vtdl pretrain` on generated frames) on the CPU, and
without PyAV, Snakemake or DVC importable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# A GPU machine may run the benchmark with its own PyTorch and only some of the project's
# dependencies (README "Benchmarks"): these must not be needed.
NOT_NEEDED_BY_GPU_BENCH = ("av", "snakemake", "dvc")

# Runs bench/gpu.py as __main__ with the packages above made unimportable.
_WITHOUT = (
    "import runpy, sys; sys.modules.update(dict.fromkeys(sys.argv[1].split(','))); "
    "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def test_gpu_benchmark_runs_at_toy_sizes_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    gpu = str(ROOT / "bench" / "gpu.py")
    blocked = ",".join(NOT_NEEDED_BY_GPU_BENCH)
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT, blocked, gpu, "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["device"] == "cpu" and results["peak_bf16_tflops"] is None
    rows = results["steps"]
    assert [r["channels_last"] for r in rows] == [False, True]
    assert all(r["triplets_per_s"] > 0 and r["gflop_per_step"] > 0 for r in rows)
    # The same model and clip, so the same counted work whatever the memory format.
    assert rows[0]["gflop_per_step"] == rows[1]["gflop_per_step"]
    [e2e] = results["end_to_end"]  # --tiny: the embedded settings only, not the paper presets
    assert e2e["backbone"] == "small3d" and e2e["presets"] == []
    assert e2e["loop_clips_per_s"] > 0 and e2e["loop_vs_bare"] > 0


def test_gpu_benchmark_skips_what_a_spent_budget_leaves_and_still_writes_its_file(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--budget", "0"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["steps"] == [] and results["end_to_end"] == []
    assert results["largest_batch"] == {}
    # Both memory formats' steps, the end-to-end loop and the largest batch: named, in order.
    assert len(results["skipped"]) == 4 and results["skipped"][0].startswith("step small3d")
    assert "past --budget" in done.stdout


def _bench_module():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import run
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return run


def test_the_loader_baseline_decodes_the_frames_extraction_stores(tmp_path):
    # loader_vs_source_decode is a fair ratio only if both sides deliver the same clips: the
    # baseline's seek-and-decode gives the frames `vtdl extract` stores (raw: no JPEG loss).
    import torch

    from vtdl.data.clips import ClipDataset
    from vtdl.data.extract import extract_shard

    bench = _bench_module()
    paths = bench.make_source_videos(tmp_path / "videos", 2, frames=40, width=96, height=72)
    manifest = extract_shard("ucf101", tmp_path / "videos", "Bench", tmp_path / "frames",
                             short_side=bench.SOURCE_SHORT_SIDE, codec="raw")  # fmt: skip
    counts = {v["path"]: v["frames"] for v in manifest["videos"]}
    (tmp_path / "list.csv").write_text(
        "path,label,class,frames\n" + "".join(f"{p},0,Bench,{n}\n" for p, n in counts.items())
    )
    stored = ClipDataset(tmp_path / "list.csv", tmp_path / "frames", 8, 4, transform=lambda c: c)
    source = bench.SourceClipDataset(
        [(p, counts[f"Bench/{p.name}"]) for p in sorted(paths)], 8, 4, lambda c: c
    )
    for index in range(2):
        for seed in range(3):
            torch.manual_seed(seed)
            a = stored[index]["video"]
            torch.manual_seed(seed)
            b = source[index]["video"]
            assert a.shape == (8, 128, 171, 3) and torch.equal(a, b)


def test_the_table_shows_every_figure():
    bench = _bench_module()
    figures = {
        "noop_rerun_s": 1.8, "snakemake_floor_s": 1.0,
        "loader_vs_source_decode": 3.5, "loader_clips_per_s": 70.0,
        "source_decode_clips_per_s": 20.0, "loader_clips_per_cpu_s": 70.0,
        "source_decode_clips_per_cpu_s": 15.0,
        "extract_vs_decode_only": 0.3, "extract_codec": "raw", "extract_frames_per_s": 1500,
        "decode_only_frames_per_s": 5000, "extract_jpeg_vs_decode_only": 0.17,
        "extract_kib_per_frame": {"raw": 64.1, "jpeg": 14.0},
        "augment_clips_per_s_per_core": {
            "loader": 8.0, "device_path_loader_half": 400.0, "device_path_device": "cpu",
            "device_path_clips_per_s_on_device": 3.0, "device_path_whole_on_cpu": 2.9,
        },
        "pretrain_efficiency": 0.6, "pretrain_loop_clips_per_s": 180.0,
        "pretrain_bare_step_clips_per_s": 300.0, "pretrain_efficiency_no_augmentation": 0.8,
        "pretrain_loop_no_augmentation_clips_per_s": 240.0,
        "peak_rss_mb": {"extract_200_videos": 60, "extract_2000_videos": 61,
                        "pretrain_200_videos": 1000, "pretrain_2000_videos": 1001},
    }  # fmt: skip
    results = {
        "date": "2026-12-05 18:00 UTC",
        "machine": {"cpu": "test", "cores": 2, "gpu": None},
        "commit": "0" * 40,
        "command": "python bench/run.py",
        "figures": figures,
    }
    rows = [line for line in bench.table(results).splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 11  # the header, then one row per line of figures
    assert all("None" not in row for row in rows)


def test_the_budget_reads_the_last_snakemake_log_that_ran_jobs(tmp_path):
    """A no-op `make reproduce` after the run writes a newer log without timestamps: the
    pipeline's wall time still comes from the run that ran the jobs."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from budget import pipeline_wall_s
    finally:
        sys.path.remove(str(ROOT / "bench"))
    ran = tmp_path / "2026-12-05T100000.000000.snakemake.log"
    ran.write_text(
        "Building DAG of jobs...\n[Sat Dec  5 10:00:05 2026]\nrule synth:\n"
        "[Sat Dec  5 10:21:35 2026]\nFinished jobid: 0 (Rule: all)\n"
    )
    noop = tmp_path / "2026-12-05T110000.000000.snakemake.log"
    noop.write_text("Building DAG of jobs...\nNothing to be done.\n")
    os.utime(ran, (1, 1))
    assert pipeline_wall_s(tmp_path) == 21 * 60 + 30
    noop.unlink()
    ran.unlink()
    with pytest.raises(SystemExit, match="no Snakemake log of a run that ran jobs"):
        pipeline_wall_s(tmp_path)


def test_the_no_op_rerun_runs_the_projects_make_without_bench_s_own_args(tmp_path):
    """`make bench ARGS="--project P"` exports ARGS to bench (and MAKEFLAGS passes it on to any
    sub-make): the project's `make reproduce` must not receive it, or Snakemake gets bench's
    options and the no-op figure is never measured."""
    (tmp_path / "Makefile").write_text(
        "show:\n"
        f"\t@{sys.executable} -c \"import sys; sys.path.insert(0, '{ROOT / 'bench'}'); "
        "import os, run; print(os.environ.get('ARGS'), run.project_make_env().get('ARGS'), "
        "'MAKEFLAGS' in run.project_make_env())\"\n"
    )
    done = subprocess.run(
        ["make", "-s", "show", "ARGS=--project x"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["--project", "x", "None", "False"]
