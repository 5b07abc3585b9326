"""The workflow on a real one-node SLURM cluster, through `--profile workflow/profiles/slurm`.

The test brings the cluster up itself from Debian's packages (munge, slurmctld, slurmd; CPU
only, configured in a temporary folder, installed with apt when missing), runs the data stages
and a tiny pretraining job of the workflow through `snakemake-executor-plugin-slurm`, checks
that the heavy jobs went through `sbatch` and their outputs are there, and stops everything. It
is skipped, with the reason, only where the packages cannot be installed or a real SLURM
configuration already exists on the machine (it is never touched).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from services import apt_install, free_port
from tiny_project import tiny_params

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
# The job-step plugin strips SLURM_CONF from a job's environment, so the nested `srun` reads
# the default path: the test's configuration goes there for the test's duration.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
PACKAGES = {"munged": "munge", "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm"}


def _conf(folder: Path, host: str) -> str:
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
    return f"""ClusterName=vtdltest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={folder}/munge.socket
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
NodeName={host} CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _stop(pid_file: Path) -> None:
    if pid_file.is_file():
        try:
            os.kill(int(pid_file.read_text().strip()), 15)
        except (ProcessLookupError, ValueError):
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running one-node cluster: (its folder, the environment its clients need)."""
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})
    apt_install(missing, present=not missing)
    if SYSTEM_CONF.exists():
        pytest.skip(f"{SYSTEM_CONF} exists: a real SLURM set-up is not touched by tests")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(_conf(folder, host))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(conf, SYSTEM_CONF)
    try:
        subprocess.run(
            ["munged", f"--key-file={key}", f"--socket={folder}/munge.socket",
             f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log",
             f"--seed-file={folder}/munge.seed", "--force"],
            check=True, timeout=30,
        )  # fmt: skip
        subprocess.run(["slurmctld", "-f", str(conf)], env=env, check=True, timeout=30)
        subprocess.run(["slurmd", "-f", str(conf)], env=env, check=True, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, check=False
            ).stdout.strip()
            if state == "idle":
                break
            if time.monotonic() > deadline:
                logs = "".join(p.read_text()[-1500:] for p in folder.glob("*.log"))
                pytest.fail(f"the SLURM node did not become idle (state {state!r}): {logs}")
            time.sleep(1)
        yield folder, env
    finally:
        subprocess.run(["scancel", "--user", "root"], env=env, check=False, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            _stop(folder / f"{name}.pid")
        SYSTEM_CONF.unlink(missing_ok=True)


def test_data_stages_and_a_pretraining_job_run_through_the_slurm_profile(cluster, tmp_path):
    folder, env = cluster
    # A project folder named with a space and a quote: the batch scripts' paths must survive.
    project = tmp_path / "it's a project"
    project.mkdir()
    (project / "params.yaml").write_text(json.dumps(tiny_params()))
    targets = ["data/splits/synth_ucf", "results/pretrain/synth_ucf/vtdl_small3d_s0/summary.json"]
    # The profile's per-rule threads and memory are a real cluster's; this node is the test
    # machine, and it has no GPU.
    fit = ["--set-threads", "pretrain=1", "--set-resources", "pretrain:gpu=0",
           "pretrain:mem_mb=2000", "extract:mem_mb=2000"]  # fmt: skip
    result = subprocess.run(
        [str(SNAKEMAKE), *targets, "--snakefile", str(ROOT / "Snakefile"), "--configfile",
         "params.yaml", "--profile", str(ROOT / "workflow" / "profiles" / "slurm"),
         "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
         *fit],
        cwd=project, capture_output=True, text=True, timeout=900, check=False,
        env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"},
    )  # fmt: skip
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-5000:]
    submitted = text.count("has been submitted with SLURM jobid")
    shards = tiny_params()["datasets"]["synth_ucf"]["synth"]["num_classes"]
    assert submitted == shards + 1, text[-3000:]  # the extraction shards and the pretraining
    # Light rules ran on this (the submitting) node, the heavy ones as batch jobs.
    for light in ("checkpoint synth", "rule splits"):  # printed "localcheckpoint", "localrule"
        assert f"\nlocal{light}:" in text and f"\n{light}:" not in text, light
    for heavy in ("extract", "pretrain"):
        assert f"\nrule {heavy}:" in text and f"localrule {heavy}:" not in text, heavy
    out = project / "results" / "pretrain" / "synth_ucf" / "vtdl_small3d_s0"
    assert (out / "encoder.pt").is_file() and (out / "summary.json").is_file()
    assert (project / "data" / "splits" / "synth_ucf" / "split1" / "train.csv").is_file()
