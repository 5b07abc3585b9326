"""A Snakemake dry run that must be refused before any job: the bad-parameter fault tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def refused_dry_run(workdir: Path, params: dict) -> str:
    """Dry-run this checkout's workflow on `params` in `workdir`; assert it fails while the DAG
    is built (one message, no traceback, no job) and created no data, logs, results or store.
    Returns the output, for the test to look for the key it expects named."""
    (workdir / "params.yaml").write_text(json.dumps(params))
    result = subprocess.run(
        [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
         "--configfile", str(workdir / "params.yaml"), "--cores", "1", "-n"],
        cwd=workdir, capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'm.db'}"},
    )  # fmt: skip
    text = result.stdout + result.stderr
    assert result.returncode != 0, text[-2000:]
    assert "Job stats" not in text and "Traceback" not in text, text[-2000:]
    assert not any((workdir / d).exists() for d in ("data", "logs", "results", "m.db"))
    return text
