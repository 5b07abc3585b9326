"""What the tests of real services share: Debian packages, free ports, waiting for a server.

A test that needs a system package installs it with apt (as any other dependency) and is
skipped, with the reason, only where that is impossible (no apt, not root, no network).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
from filelock import FileLock


def apt_install(packages: list[str], present: bool) -> None:
    """Install Debian `packages` unless `present`; skip the test if they cannot be installed."""
    if present:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"{', '.join(packages)} missing and apt-get (as root) is not available")
    # One apt at a time: tests run on two workers, and dpkg refuses a second one.
    with FileLock(os.path.join(tempfile.gettempdir(), "vtdl-tests-apt.lock")):
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", *packages],
        ):
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=900, check=False
            )
            if result.returncode != 0:
                pytest.skip(f"cannot install {', '.join(packages)}: {result.stderr[-500:]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, server: subprocess.Popen, what: str, timeout: float) -> None:
    """Return once `url` answers HTTP 200; fail naming `what` if `server` dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            output = server.stdout.read().decode(errors="replace") if server.stdout else ""
            pytest.fail(f"{what} did not answer at {url}: {output[-3000:]}")
        time.sleep(0.3)
