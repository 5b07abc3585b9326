"""An S3 DVC remote, for real: an S3-compatible server (moto) on 127.0.0.1 and `dvc-s3`.

The collaborator story of tests/test_dvc.py through S3: clone A of the tiny project adds the
bucket as a remote and runs `make push REMOTE=s3`; a fresh clone B that knows only the remote's
address pulls with `make pull REMOTE=s3`, Snakemake then has nothing to run, and B has A's data,
results and tables byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from services import free_port, wait_until_serving
from tiny_project import BIN, clone, digests, git, make, out, run

pytestmark = pytest.mark.slow

CREDENTIALS = {  # moto accepts any; real ones come from the usual AWS variables or files
    "AWS_ACCESS_KEY_ID": "vtdl-test",
    "AWS_SECRET_ACCESS_KEY": "vtdl-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("moto", reason="moto[server] is installed by `make setup` (dev extras)")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, server, "moto's S3 server", timeout=60)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _add_remote(work: Path, endpoint: str) -> None:
    dvc = str(BIN / "dvc")
    for command in (
        [dvc, "remote", "add", "-f", "s3", "s3://vtdl-bucket/cache"],
        [dvc, "remote", "modify", "s3", "endpointurl", endpoint],
    ):
        result = run(work, *command)
        assert result.returncode == 0, out(result)


def test_push_to_s3_and_a_fresh_clone_pulls_everything_without_rerunning(
    tiny_project, s3_endpoint, monkeypatch
):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="vtdl-bucket")

    clone_a = clone(tiny_project, "S3A")
    assert make("pull", clone_a).returncode == 0  # A's results, from the local remote
    _add_remote(clone_a, s3_endpoint)
    pushed = make("push", clone_a, "REMOTE=s3")
    assert pushed.returncode == 0, out(pushed)
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="vtdl-bucket")
    assert listed["KeyCount"] > 0  # the objects are in the bucket
    git("add", ".dvc/config", cwd=clone_a)
    git("commit", "-qm", "S3 remote", cwd=clone_a)
    git("push", "-q", "origin", "main", cwd=clone_a)

    clone_b = clone(tiny_project, "S3B")  # knows the remote from .dvc/config, nothing else
    assert not (clone_b / "results").exists()
    pulled = make("pull", clone_b, "REMOTE=s3")
    assert pulled.returncode == 0, out(pulled)
    dry = run(clone_b, str(BIN / "snakemake"), "--cores", "2", "--dry-run")
    assert dry.returncode == 0 and "Nothing to be done" in out(dry), out(dry)
    folders = ("data", "results")
    assert digests(clone_b, *folders) == digests(clone_a, *folders)
    assert os.path.getsize(clone_b / "mlflow.db") > 0
