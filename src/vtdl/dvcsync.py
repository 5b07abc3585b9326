"""DVC glue: share a finished pipeline with a colleague and pick it up without re-running it.

Snakemake owns the job graph and DVC versions the bytes (dvc.yaml delegates each stage to
Snakemake). Three things do not work out of the box, and this module handles them:

- The MLflow store stores absolute artifact paths (`/home/alice/vtdl/mlartifacts/<run>/...`),
  which mean nothing in another clone. `seal` rewrites the ones inside this project to paths
  relative to the project root, where every vtdl command, Snakemake job and `make ui` runs, so
  the versioned `mlflow.db` works in any clone. MLflow keeps a relative path as it is, so runs
  logged afterwards get relative paths too.
- `dvc metrics show` reads JSON, not the report's CSV tables: `seal` also writes the headline
  metrics (mean over seeds) of every result file to `results/metrics.json`.
- After `dvc pull` the files carry the time they were written, in whatever order DVC wrote
  them, so Snakemake would find outputs older than their inputs and re-run the whole pipeline.
  `pull` runs `snakemake --touch --forceall` after a successful pull: in job order, it marks
  every pulled output as up to date without running anything, and gives every job Snakemake's
  metadata, so a source file touched but not edited later re-runs nothing. It also refuses to
  pull over tracked outputs that were changed in the workspace (DVC would overwrite them),
  unless forced.

Stages of dvc.yaml run `python -m vtdl.dvcsync run <rules>`: Snakemake on the output files of
those rules' jobs. Run as `python -m vtdl.dvcsync {run,seal,pull,push}` from the project root
(dvc.yaml and the Makefile's `pull` and `push` targets do).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from statistics import fmean

from vtdl import tracking
from vtdl.config import load_yaml
from vtdl.errors import VtdlError
from vtdl.fsutil import atomic_write_json
from vtdl.names import (
    PROTOCOLS,
    parse_clip_metric,
    parse_recall_metric,
    parse_result_name,
    split_metric_key,
)

STORE = "mlflow.db"
METRICS = "results/metrics.json"
# DVC status words for a tracked output that differs from dvc.lock in the workspace.
_CHANGED = "modified"


def _bin(name: str) -> str:
    """An executable next to this Python (the venv's), so no activated venv is needed."""
    return str(Path(sys.executable).with_name(name))


def _env() -> dict[str, str]:
    """The environment for dvc: the venv first on PATH, so stage commands find snakemake."""
    path = os.environ.get("PATH", "")
    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), path])}


# ----------------------------------------------------------------------------------------------
# seal: portable MLflow store + metrics for `dvc metrics show`
# ----------------------------------------------------------------------------------------------


def _headline_clips(metric: str) -> int | None:
    """Clips per video of a headline metric (N-clip top-1; 0 for R@1); None for the others."""
    clip = parse_clip_metric(metric)
    if clip and clip[0] == "top1":
        return clip[1]
    return 0 if parse_recall_metric(metric) == 1 else None


def headline_metrics(results: Path) -> dict[str, dict[str, float]]:
    """Mean over seeds of the headline metrics of every downstream result file.

    Returns {"<method>_<backbone>": {"<ds>/split<k>/<protocol>/<metric>": mean}}; for accuracy
    only the largest N-clip test is kept, so `dvc metrics show` stays readable.
    """
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for protocol in PROTOCOLS:
        for path in sorted((results / protocol).glob("*/split*/*.json")):
            name = parse_result_name(path.name)
            if not name:
                continue
            try:
                metrics = json.loads(path.read_text(encoding="utf-8"))["metrics"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise VtdlError(
                    f"{path}: not a result file with a 'metrics' object: {err}"
                ) from err
            for key, value in metrics.items():
                if _headline_clips(split_metric_key(key)[1]) is not None and isinstance(
                    value, (int, float)
                ):
                    values[(f"{name['method']}_{name['backbone']}", key)].append(float(value))
    clips: dict[str, int] = {}  # largest N per "<ds>/split<k>/<protocol>"
    for _, key in values:
        head, metric = split_metric_key(key)
        clips[head] = max(clips.get(head, 0), _headline_clips(metric) or 0)
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for (run, key), samples in sorted(values.items()):
        head, metric = split_metric_key(key)
        n = _headline_clips(metric)
        if n and n != clips[head]:
            continue
        table[run][key] = round(fmean(samples), 6)
    return dict(table)


def seal(root: Path) -> None:
    changed = tracking.make_store_portable(root / STORE, root)
    metrics = headline_metrics(root / "results")
    atomic_write_json(root / METRICS, metrics)
    print(
        f"dvcsync seal: {changed} artifact location(s) made relative to the project;"
        f" {sum(map(len, metrics.values()))} headline metric(s) in {METRICS}"
    )


# ----------------------------------------------------------------------------------------------
# run: one DVC stage = the Snakemake jobs of some rules
# ----------------------------------------------------------------------------------------------

PROFILE = "workflow/profiles/default"


def rule_targets(rules: list[str]) -> list[str]:
    """Output files of every job of `rules` in the default target's DAG, in Snakemake's order.

    Read from `snakemake --detailed-summary` (one row per output file, with its rule).
    `--until` would be the obvious tool, but with a checkpoint upstream (synth) Snakemake 9
    stops with "Out of jobs ready to be started", and `--omit-from` silently drops jobs.
    """
    result = _run([_bin("snakemake"), "--detailed-summary", "--quiet"], capture=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise VtdlError("snakemake --detailed-summary failed (see above)")
    targets = []
    for line in result.stdout.splitlines()[1:]:
        cells = line.split("\t")
        if len(cells) > 2 and cells[2] in rules and cells[0] not in targets:
            targets.append(cells[0])
    return targets


def run_rules(rules: list[str]) -> None:
    """Run (through the default profile) the jobs of `rules` and whatever they depend on.

    Extra Snakemake options come from $SNAKEMAKE_ARGS (`make dvc-repro` passes --cores).
    """
    targets = rule_targets(rules)
    if not targets:
        print(f"dvcsync run: no job of rule(s) {', '.join(rules)} in this configuration")
        return
    extra = shlex.split(os.environ.get("SNAKEMAKE_ARGS", ""))
    command = [_bin("snakemake"), "--workflow-profile", PROFILE, *extra, *targets]
    if _run(command).returncode != 0:
        raise VtdlError(f"snakemake failed for rule(s) {', '.join(rules)} (see above)")


# ----------------------------------------------------------------------------------------------
# pull / push
# ----------------------------------------------------------------------------------------------


def _run(command: list[str], *, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=_env(), capture_output=capture, text=True, check=False)


def changed_outputs(status: dict) -> list[str]:
    """Tracked outputs whose workspace content differs from dvc.lock, from `dvc status --json`.

    Missing outputs ("deleted", "not in cache") are what a pull is for and are not listed.
    """
    found = set()
    for entries in status.values():
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict):
                for path, state in entry.get("changed outs", {}).items():
                    if state == _CHANGED:
                        found.add(path)
    return sorted(found)


def _dvc_status() -> dict:
    result = _run([_bin("dvc"), "status", "--json"], capture=True)
    if result.returncode != 0:
        raise VtdlError(f"dvc status failed:\n{result.stderr.strip()}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError as err:
        raise VtdlError(f"dvc status --json: unreadable output: {result.stdout[:500]}") from err


def locked_stages(lock: Path = Path("dvc.lock")) -> list[str]:
    """Stages that dvc.lock pins: what a collaborator pushed (maybe not the whole pipeline)."""
    if not lock.is_file():
        raise VtdlError(
            f"{lock} not found: nothing has been pushed from this commit yet (run the pipeline "
            "and `make push`, then commit dvc.lock)"
        )
    try:
        stages = load_yaml(lock)["stages"]
    except (VtdlError, KeyError, TypeError) as err:
        raise VtdlError(f"{lock}: not a DVC lock file: {err}") from err
    return list(stages)


def stale_stages(status: dict) -> list[str]:
    """Stages whose code, inputs or params in the workspace differ from dvc.lock."""
    stale = []
    for stage, entries in status.items():
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and ("changed deps" in entry or "changed params" in entry):
                stale.append(stage)
                break
    return stale


def locked_outputs(lock: Path = Path("dvc.lock")) -> dict[str, list[str]]:
    """The outputs dvc.lock pins, by stage."""
    stages = load_yaml(lock)["stages"]
    return {name: [out["path"] for out in stage.get("outs", [])] for name, stage in stages.items()}


def mismatched_deps(status: dict, outputs: set[str]) -> dict[str, list[str]]:
    """Per stage, what in the workspace differs from the code and params dvc.lock records.

    From `dvc status --json` before a pull: a dep that is another stage's output is not
    counted (missing before a pull; a changed one is that stage's changed output), so what
    remains is code, workflow files and params sections (`params.yaml (pretrain)`).
    """
    found: dict[str, list[str]] = {}
    for stage, entries in status.items():
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            deps = {**entry.get("changed deps", {}), **entry.get("changed params", {})}
            for path, state in deps.items():
                if path in outputs:
                    continue
                if isinstance(state, dict):  # a params file: section -> state
                    found.setdefault(stage, []).append(f"{path} ({', '.join(sorted(state))})")
                elif state in (_CHANGED, "deleted", "new"):
                    found.setdefault(stage, []).append(path)
    return found


def mark_out_of_date(paths: list[str]) -> None:
    """Give every file and folder below `paths` a modification time in 1970: older than any
    input, so Snakemake re-runs the jobs that write them (their contents stay)."""
    for root in map(Path, paths):
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            # One second after the epoch: Snakemake reads a time of 0 as "no time".
            os.utime(path, (1, 1), follow_symlinks=False)


def _missing(stages: list[str]) -> list[str]:
    """Tracked outputs that neither the local cache nor the remote holds (`dvc status -c`)."""
    result = _run([_bin("dvc"), "status", "--cloud", "--json", *stages], capture=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    try:
        status = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return []
    return sorted(path for path, state in status.items() if state == "missing")


def pull(force: bool = False, remote: str | None = None) -> None:
    """`dvc pull`, refusing to overwrite changed outputs, then mark the outputs up to date."""
    stages = locked_stages()
    status = _dvc_status()
    changed = changed_outputs(status)
    if changed and not force:
        raise VtdlError(
            "these tracked outputs were changed in the workspace and a pull would overwrite "
            f"them: {', '.join(changed)}. Keep them with `make push` (records them in "
            "dvc.lock), inspect them with `dvc status` / `dvc diff`, or discard them with "
            "`make pull FORCE=1`"
        )
    # Outputs of other code or params would pass for results of this checkout once touched:
    # say so before anything is written.
    outputs = locked_outputs()
    mismatched = mismatched_deps(status, {p for paths in outputs.values() for p in paths})
    if mismatched and not force:
        differ = "; ".join(f"stage {s}: {', '.join(deps)}" for s, deps in mismatched.items())
        raise VtdlError(
            f"dvc.lock does not match this workspace ({differ}): its outputs were made with "
            "other code or params and would pass for results of this checkout. Nothing was "
            "pulled. Check out the commit that dvc.lock belongs to (`git log -- dvc.lock`), or "
            "`make pull FORCE=1` to pull them marked out of date, so that `make reproduce` "
            "re-runs those stages"
        )
    command = [_bin("dvc"), "pull", *(["--force"] if force else [])]
    command += [*(["--remote", remote] if remote else []), *stages]
    result = _run(command)
    if result.returncode != 0:
        raise VtdlError(
            f"dvc pull failed; missing from the remote: {', '.join(_missing(stages)) or '?'} "
            "(DVC's messages above give each hash). This commit's dvc.lock pins data that "
            "was never pushed: ask whoever committed it to `make push`, or check the remote "
            "(`dvc remote list`, `dvc status --cloud`)"
        )
    # Touch every job in job order: each pulled output becomes newer than its inputs, nothing
    # runs, and every job gets Snakemake's metadata (input checksums). Without --forceall only
    # the jobs whose files DVC happened to write out of order got it, and later a source file
    # merely touched (a branch switched and back) re-ran everything after the jobs without it.
    touch = _run([_bin("snakemake"), "--touch", "--forceall", "--cores", "1", "--quiet"])
    if touch.returncode != 0:
        raise VtdlError("snakemake --touch failed after the pull (see above)")
    if mismatched:
        mark_out_of_date([path for stage in mismatched for path in outputs.get(stage, [])])
        print(
            f"dvcsync pull: stage(s) {', '.join(mismatched)} pulled but marked out of date "
            "(made with other code or params): `make reproduce` re-runs them"
        )
    stale = [stage for stage in stale_stages(_dvc_status()) if stage not in mismatched]
    if stale:
        print(
            f"dvcsync pull: warning: stage(s) {', '.join(stale)}: the workspace's code or "
            "params differ from those that produced the pulled outputs (`dvc status`); "
            "`make dvc-repro` brings them up to date"
        )
    print(f"dvcsync pull: {', '.join(stages)} pulled and marked up to date")


def push(remote: str | None = None) -> None:
    """Record the pipeline's outputs in dvc.lock (`dvc repro`), then upload them."""
    if _run([_bin("dvc"), "repro"]).returncode != 0:
        raise VtdlError("dvc repro failed (see above); nothing was pushed")
    result = _run([_bin("dvc"), "push", *(["--remote", remote] if remote else [])])
    if result.returncode != 0:
        raise VtdlError("dvc push failed (see above)")
    pending = subprocess.run(
        ["git", "status", "--porcelain", "--", "dvc.lock"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if pending:
        print("dvcsync push: data pushed; now commit the pins: git add dvc.lock && git commit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vtdl.dvcsync", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="the Snakemake jobs of some rules (dvc.yaml stages)")
    run_parser.add_argument("rules", nargs="+", help="rule names, e.g. synth extract splits")
    sub.add_parser("seal", help="portable MLflow store + results/metrics.json (dvc.yaml report)")
    pull_parser = sub.add_parser("pull", help="dvc pull, then mark outputs up to date")
    pull_parser.add_argument("--force", action="store_true", help="overwrite changed outputs")
    pull_parser.add_argument("--remote", help="DVC remote (default: the configured one)")
    push_parser = sub.add_parser("push", help="dvc repro (record dvc.lock), then dvc push")
    push_parser.add_argument("--remote", help="DVC remote (default: the configured one)")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            run_rules(args.rules)
        elif args.command == "seal":
            seal(Path.cwd())
        elif args.command == "pull":
            pull(force=args.force, remote=args.remote)
        else:
            push(remote=args.remote)
    except VtdlError as err:
        print(f"dvcsync {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
