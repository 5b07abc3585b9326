"""The fault-injection suite: each test injects one fault and records its outcome.

A test takes the `fault` fixture and names what it injects, `fault("bad videos", "truncated")`;
its pass or failure is that trial's outcome (survived or not), and `fault.intact(paths)` checks
that finished outputs were not touched (anything lost fails the trial and is recorded). With
`VTDL_FAULTS_SUMMARY=<folder>` (`make faults`), the session writes `<folder>/summary.json` and
`<folder>/summary.md`, the table the README shows: fault, trials, survived, anything lost
(also under pytest-xdist, as `make test` runs: the workers' shares are merged).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest

_OUTCOMES: list[dict] = []


class Fault:
    def __init__(self, node: pytest.Item) -> None:
        self._node = node
        self.record: dict | None = None

    def __call__(self, category: str, name: str) -> Fault:
        self.record = {"category": category, "fault": name, "lost": []}
        self._node.stash[_KEY] = self.record
        return self

    @staticmethod
    def snapshot(paths: Iterable[Path]) -> dict[str, str]:
        """Digest of every file below `paths` (files or folders)."""
        found = {}
        for root in paths:
            for path in sorted([root] if root.is_file() else root.rglob("*")):
                if path.is_file():
                    found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return found

    def intact(self, before: dict[str, str]) -> None:
        """Assert the files of an earlier `snapshot` are unchanged; record what was lost."""
        after = self.snapshot(Path(p) for p in before)
        lost = sorted(p for p, digest in before.items() if after.get(p) != digest)
        if self.record is not None:
            self.record["lost"].extend(lost)
        assert not lost, f"finished outputs changed or lost: {lost}"


_KEY = pytest.StashKey[dict]()


@pytest.fixture
def fault(request) -> Fault:
    return Fault(request.node)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    record = item.stash.get(_KEY, None)
    if record is not None and report.when == "call":
        _OUTCOMES.append({**record, "survived": report.passed, "test": item.nodeid})


def _all_outcomes(out: Path) -> list[dict]:
    """This process's outcomes and, under pytest-xdist, those the other workers of the same run
    left (each worker writes its share; the last to finish writes the whole table)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        return _OUTCOMES
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    (out / f".outcomes-{run}-{worker}.json").write_text(json.dumps(_OUTCOMES))
    outcomes = []
    for part in sorted(out.glob(".outcomes-*.json")):
        if part.name.startswith(f".outcomes-{run}-"):
            outcomes += json.loads(part.read_text())
        else:
            part.unlink(missing_ok=True)  # an earlier run's
    return outcomes


def pytest_sessionfinish(session, exitstatus):
    folder = os.environ.get("VTDL_FAULTS_SUMMARY")
    if not folder or not _OUTCOMES:
        return
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two workers finishing at once
        _write_summary(out, _all_outcomes(out))


def _write_summary(out: Path, outcomes: list[dict]) -> None:
    rows: dict[tuple[str, str], dict] = defaultdict(
        lambda: {"trials": 0, "survived": 0, "lost": []}
    )
    for outcome in outcomes:
        row = rows[(outcome["category"], outcome["fault"])]
        row["trials"] += 1
        row["survived"] += int(outcome["survived"])
        row["lost"].extend(outcome["lost"])
    summary = [{"category": c, "fault": f, **row} for (c, f), row in sorted(rows.items())]
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = ["| category | fault | trials | survived | anything lost |", "|---|---|---|---|---|"]
    for row in summary:
        lost = "no" if not row["lost"] else f"yes ({len(row['lost'])} files)"
        lines.append(
            f"| {row['category']} | {row['fault']} | {row['trials']} | {row['survived']} | {lost} |"
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
