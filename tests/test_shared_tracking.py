"""A shared MLflow tracking server on a real PostgreSQL, as several users or nodes would use it.

The test starts PostgreSQL from Debian's `postgresql` (its own data folder and port, installed
with apt when missing; skipped, with the reason, only where that is impossible), an MLflow
server on 127.0.0.1 over it with an artifact root, and runs the tiny project's whole pipeline
with `MLFLOW_TRACKING_URI=http://...` (two jobs at a time write to the server). The tables the
report rebuilds from the server equal, byte for byte, the tables of the same pipeline logged to
a local sqlite store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from services import apt_install, free_port, wait_until_serving
from tiny_project import BIN, clone, env, out

pytestmark = pytest.mark.slow


def _pg_bin() -> Path:
    apt_install(["postgresql"], present=Path("/usr/lib/postgresql").is_dir())
    versions = sorted(Path("/usr/lib/postgresql").iterdir(), key=lambda p: int(p.name))
    return versions[-1] / "bin"


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres():
    pg = _pg_bin()
    folder = Path(tempfile.mkdtemp(prefix="vtdl-pg-"))
    folder.chmod(0o755)
    data, port = folder / "data", free_port()
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    try:
        subprocess.run(_as_postgres([str(pg / "initdb"), "-D", str(data), "-A", "trust",
                                     "-U", "vtdl"]), check=True, capture_output=True)  # fmt: skip
        subprocess.run(
            _as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"),
                          "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "-w",
                          "start"]), check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(_as_postgres([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                                     "-U", "vtdl", "mlflow"]), check=True)  # fmt: skip
        yield f"postgresql://vtdl@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "stop"]), check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    pytest.importorskip("psycopg2", reason="psycopg2-binary is installed by `make setup`")
    artifacts, port = tmp_path_factory.mktemp("artifacts"), free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", postgres,
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/health", server, "mlflow server on PostgreSQL", timeout=180)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


def test_the_pipeline_logs_to_a_server_on_postgresql_and_the_report_matches(
    tiny_project, tracking_server
):
    work = clone(tiny_project, "PG")
    variables = {**env(), "MLFLOW_TRACKING_URI": tracking_server}
    venv = BIN.parent
    result = subprocess.run(
        ["make", "-o", str(venv / ".installed"), f"VENV={venv}", "CORES=2", "reproduce"],
        cwd=work, env=variables, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, out(result)
    assert not (work / "mlflow.db").exists()  # nothing went to a local store

    # The report rule's tables (from the server) equal the sqlite-logged run's, number for number.
    tables_a, tables = tiny_project / "A" / "results" / "tables", work / "results" / "tables"
    for name in ("ablation.csv", "all_metrics.csv", "pretext.csv", "differences.csv"):
        assert (tables / name).read_bytes() == (tables_a / name).read_bytes(), name

    # Every job's run is on the server exactly once.
    from mlflow import MlflowClient

    runs = MlflowClient(tracking_server).search_runs(
        [MlflowClient(tracking_server).get_experiment_by_name("vtdl").experiment_id]
    )
    stages = sorted(r.data.tags["stage"] for r in runs)
    assert stages.count("pretrain") == 2 and len(runs) == 2 + 3 * 3, stages  # vtdl, supervised
    assert all(r.info.status == "FINISHED" for r in runs)

    rebuilt = subprocess.run(
        [str(BIN / "vtdl"), "report", "--out", "rebuilt", "--clips", "2", "--no-plots"],
        cwd=work, env=variables, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert rebuilt.returncode == 0, out(rebuilt)
    for table in tables.glob("*.csv"):
        assert (work / "rebuilt" / "tables" / table.name).read_bytes() == table.read_bytes()
