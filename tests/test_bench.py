"""The GPU benchmark keeps working without a GPU: `bench/gpu.py --tiny` runs its whole path
(step figures, FLOP count, end-to-end `vtdl pretrain` on generated frames) on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_runs_at_toy_sizes_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--out", str(out)],
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
    e2e = results["end_to_end"]
    assert e2e["loop_clips_per_s"] > 0 and e2e["loop_vs_bare"] > 0
