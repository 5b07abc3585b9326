"""Tests for `vtdl report` against a small real MLflow store built in the test."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shutil
import time
from pathlib import Path

import pytest

from vtdl import report
from vtdl.errors import VtdlError
from vtdl.report import tables
from vtdl.report.collect import DownstreamRun, Store
from vtdl.tracking import start_run

DS = "synth_hmdb"
PRE = "synth_ucf"
BACKBONE = "small3d"

# (protocol, method) -> final metric values for seeds 0 and 1 (fractions, as stored).
VALUES = {
    ("finetune", "scratch"): (0.30, 0.40),
    ("finetune", "moco"): (0.42, 0.46),
    ("finetune", "vtdl"): (0.50, 0.60),
    ("finetune", "supervised"): (0.70, 0.75),
    ("linear", "moco"): (0.20, 0.30),
    ("linear", "vtdl"): (0.35, 0.45),
    ("retrieval", "vtdl"): (0.25, 0.35),
}
PRETEXT = {  # method -> (loss, instance_acc, pos_beats_neg) per epoch 0..2 for seeds 0 and 1
    "moco": ((2.0, 0.2, 0.5), (1.8, 0.3, 0.55)),
    "vtdl": ((1.5, 0.6, 0.9), (1.4, 0.7, 0.95)),
}


def _downstream(protocol, method, seed, value, artifacts: Path | None = None, fail=False):
    tags = {
        "dataset": DS,
        "split": 1,
        "seed": seed,
        "backbone": BACKBONE,
        "method": method,
        "pretrain_dataset": PRE,
    }
    prefix = f"{DS}/split1/{protocol}"
    if protocol == "retrieval":
        metrics = {f"{prefix}/recall_at_{k}": min(1.0, value + 0.01 * k) for k in (1, 5, 10)}
    else:
        metrics = {
            f"{prefix}/top1_10clip": value,
            f"{prefix}/top5_10clip": min(1.0, value + 0.3),
            f"{prefix}/top1_1clip": value - 0.05,
        }
    with start_run(protocol, {"lr": 0.1}, tags, run_name=f"{protocol}-{method}-s{seed}") as run:
        if protocol != "retrieval":
            for epoch in range(3):
                run.log_metrics(
                    {
                        f"{prefix}/train_loss": 2.0 - epoch * 0.5,
                        f"{prefix}/train_top1": 0.2 * epoch,
                    },
                    step=epoch,
                )
        run.log_metrics(metrics, step=0)
        if artifacts is not None:
            for path in sorted(artifacts.iterdir()):
                run.log_artifact(path)
        if fail:
            raise RuntimeError("job crashed")
    time.sleep(0.005)  # distinct start times: "latest" is well defined


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A store with 2 seeds x several methods, one FAILED run and one superseded duplicate."""
    root = tmp_path_factory.mktemp("report_store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.delenv("VTDL_EXPERIMENT", raising=False)
        mp.chdir(root)
        confusion = root / "confusion_artifacts"
        confusion.mkdir()
        (confusion / "confusion_10clip.json").write_text(json.dumps([[3, 1], [0, 4]]))
        (confusion / "classes.json").write_text(json.dumps(["left", "right"]))
        drawn = root / "png_artifacts"  # a run that logged the PNG itself: copied as is
        drawn.mkdir()
        (drawn / "confusion_10clip.png").write_bytes(b"\x89PNG fake image bytes")

        for method, per_seed in PRETEXT.items():
            for seed, (loss, acc, beats) in enumerate(per_seed):
                tags = {
                    "dataset": PRE,
                    "split": 1,
                    "seed": seed,
                    "backbone": BACKBONE,
                    "method": method,
                }
                with start_run("pretrain", {"epochs": 3}, tags) as run:
                    for epoch in range(3):
                        late = epoch == 2  # only the last epoch counts in the table
                        run.log_metrics(
                            {
                                "pretrain/epoch/loss": loss if late else 9.0,
                                "pretrain/epoch/instance_acc": acc if late else 0.0,
                                "pretrain/epoch/pos_beats_neg": beats if late else 0.0,
                            },
                            step=epoch,
                        )
                time.sleep(0.005)
        # Superseded: an older run of (finetune, vtdl, seed 0) that a re-run replaces.
        _downstream("finetune", "vtdl", 0, 0.99)
        for (protocol, method), values in sorted(VALUES.items()):
            for seed, value in enumerate(values):
                artifacts = None
                if protocol == "finetune" and seed == 0:
                    artifacts = {"vtdl": confusion, "moco": drawn}.get(method)
                _downstream(protocol, method, seed, value, artifacts)
        # Crashed after the good run: must not replace it.
        with pytest.raises(RuntimeError):
            _downstream("finetune", "vtdl", 1, 0.01, fail=True)
        yield root


def _report(out: Path, *argv: str) -> None:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    report.run(parser.parse_args(["--out", str(out), *argv]))


def _cell(mean_std: tuple[float, float], n: int = 2) -> str:
    return f"{mean_std[0]:.1f} ± {mean_std[1]:.1f} (n={n})"


def _by_hand(values) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return 100 * mean, 100 * std


def _md_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith(("| setting", "| difference")):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def test_report_tables_plots_and_determinism(store: Path, capsys):
    out = store / "results"
    _report(out)
    tables_dir = out / "tables"
    names = sorted(p.name for p in tables_dir.iterdir())
    expected = [f"{t}.{e}" for t in report.TABLE_NAMES for e in ("md", "csv", "tex")]
    assert names == sorted([*expected, "differences.csv"])

    md = (tables_dir / "ablation.md").read_text(encoding="utf-8")
    assert f"## backbone {BACKBONE}, pretrained on {PRE}" in md
    header = next(line for line in md.splitlines() if line.startswith("| setting"))
    assert "synth_hmdb/split1 fine-tune top1 (10-clip) (%)" in header
    assert "synth_hmdb/split1 retrieval R@1 (%)" in header
    main, _, paired = md.partition("paired differences")
    rows = _md_rows(main)
    assert list(rows) == [tables.method_label(m) for m in tables.ABLATION_METHODS]
    ft, lin, ret = 0, 1, 2
    # Paired by seed: vtdl - scratch fine-tune is 0.2 for both seeds (no spread: beyond noise);
    # moco - scratch is 0.12 and 0.06 (mean 9.0, 2 SE = 6.0: beyond noise); linear has no
    # scratch runs, so no difference.
    diffs = _md_rows(paired)
    assert diffs["vtdl − scratch"][ft] == "+20.0 ± 0.0 *"
    assert diffs["moco − scratch"][ft] == "+9.0 ± 6.0 *"
    assert diffs["vtdl − scratch"][lin] == tables.MISSING
    assert "twice its standard error" in md
    # Latest FINISHED runs only: 0.99 (superseded) and 0.01 (FAILED) are ignored.
    assert rows["+TCA (vtdl)"][ft] == _cell(_by_hand([0.50, 0.60])) == "55.0 ± 7.1 (n=2)"
    assert rows["+TCA (vtdl)"][lin] == _cell(_by_hand([0.35, 0.45]))
    assert rows["+TCA (vtdl)"][ret] == _cell(_by_hand([0.25 + 0.01, 0.35 + 0.01]))
    assert rows["scratch"][ft] == _cell(_by_hand([0.30, 0.40]))
    assert rows["scratch"][lin] == tables.MISSING  # no linear probe of scratch
    assert rows["+basic augmentation (moco)"][ft] == _cell(_by_hand([0.42, 0.46]))
    assert rows["+temporal negative (moco_td)"] == [tables.MISSING] * 3
    assert rows["supervised (reference, all labels)"][ft] == _cell(_by_hand([0.70, 0.75]))

    ablation_csv = list(csv.DictReader(io.StringIO((tables_dir / "ablation.csv").read_text())))
    vtdl_ft = next(
        r
        for r in ablation_csv
        if (r["method"], r["protocol"], r["metric"]) == ("vtdl", "finetune", "top1_10clip")
    )
    assert (vtdl_ft["mean"], vtdl_ft["std"], vtdl_ft["n"]) == ("0.550000", "0.070711", "2")

    pretext_md = (tables_dir / "pretext.md").read_text(encoding="utf-8")
    vtdl_line = next(line for line in pretext_md.splitlines() if "+TCA (vtdl)" in line)
    # n, instance acc, pos beats neg, loss (last epoch), supervised train top1
    assert vtdl_line.split(" | ")[3:] == ["2", "65.0 ± 7.1", "92.5 ± 3.5", "1.450 ± 0.071", "— |"]

    all_md = (tables_dir / "all_metrics.md").read_text(encoding="utf-8")
    assert "top1 (1-clip)" in all_md and "R@10" in all_md
    assert "| small3d | — | scratch |" in all_md  # scratch has no pretraining set

    plots_dir = out / "plots"
    assert (plots_dir / f"ablation_{BACKBONE}_{PRE}.png").stat().st_size > 0
    assert (plots_dir / f"pretrain_curves_{PRE}_split1_{BACKBONE}.png").exists()
    assert (plots_dir / f"finetune_{DS}_split1_{BACKBONE}_{PRE}_curves.png").exists()
    # Only two seed-0 fine-tune runs have a confusion matrix: vtdl's JSON is redrawn, moco's
    # PNG is copied byte for byte.
    confusion = sorted(p.name for p in (plots_dir / "confusion").iterdir())
    assert confusion == [f"{DS}_split1_{m}_{BACKBONE}_{PRE}_s0.png" for m in ("moco", "vtdl")]
    copied = plots_dir / "confusion" / f"{DS}_split1_moco_{BACKBONE}_{PRE}_s0.png"
    assert copied.read_bytes() == b"\x89PNG fake image bytes"

    # Deterministic: deleting the tables and rebuilding gives the same bytes.
    before = {p.name: p.read_bytes() for p in tables_dir.iterdir()}
    shutil.rmtree(tables_dir)
    _report(out, "--no-plots")
    assert {p.name: p.read_bytes() for p in tables_dir.iterdir()} == before
    assert "downstream and 4 pretraining runs" in capsys.readouterr().err


def test_report_filters_and_clips(store: Path):
    out = store / "filtered"
    _report(out, "--no-plots", "--clips", "1", "--pretrain-dataset", PRE, "--backbone", BACKBONE)
    md = (out / "tables" / "ablation.md").read_text(encoding="utf-8")
    assert "fine-tune top1 (1-clip)" in md
    assert _md_rows(md)["+TCA (vtdl)"][0] == _cell(_by_hand([0.45, 0.55]))
    with pytest.raises(VtdlError, match=r"has no downstream runs matching .*backbone=i3d") as err:
        _report(out, "--no-plots", "--backbone", "i3d")  # only small3d runs in the store
    assert str(store / "mlflow.db") in str(err.value)
    with pytest.raises(VtdlError, match=r"pretrain_dataset=kinetics"):
        _report(out, "--no-plots", "--pretrain-dataset", "kinetics")


def test_report_keeps_only_the_configured_seeds(store: Path):
    # The store holds seeds 0 and 1; a grid cut to seed 1 reports seed 1 alone (n=1).
    out = store / "one_seed"
    _report(out, "--no-plots", "--clips", "1", "--seeds", "1")
    md = (out / "tables" / "ablation.md").read_text(encoding="utf-8")
    assert _md_rows(md)["+TCA (vtdl)"][0] == "55.0 (n=1)"
    pretext = (out / "tables" / "pretext.md").read_text(encoding="utf-8")
    assert "(n=2)" not in md and "| 2 |" not in pretext
    with pytest.raises(VtdlError, match=r"seed in \{7, 8\}"):
        _report(out, "--no-plots", "--seeds", "8", "7")


def test_report_on_empty_store_names_store_and_filter(tmp_path: Path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/empty.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("VTDL_EXPERIMENT", raising=False)
    with pytest.raises(VtdlError) as err:
        _report(tmp_path / "results")
    assert uri in str(err.value)
    assert "stage in {finetune, linear, retrieval}" in str(err.value)
    assert not (tmp_path / "results" / "tables").exists()
    assert not (tmp_path / "empty.db").exists()  # reporting never creates a store


def _run(method, seed, value, backbone=BACKBONE, pretrain=PRE, metric="top1_10clip"):
    return DownstreamRun(
        protocol="finetune",
        method=method,
        backbone=backbone,
        dataset=DS,
        split=1,
        seed=seed,
        pretrain_dataset=None if method == "scratch" else pretrain,
        run_id=f"{method}-{backbone}-{pretrain}-{seed}-{metric}",
        artifact_uri="",
        metrics={metric: value} if metric else {},
    )


def test_groups_share_scratch_and_partial_cells_show_their_n():
    """Scratch joins every pretraining set of its backbone; a cell short of seeds shows its n."""
    store_ = Store(
        uri="sqlite:///x.db",
        experiment="vtdl",
        downstream=(
            _run("scratch", 0, 0.2),
            _run("scratch", 1, 0.4),
            _run("vtdl", 0, 0.5),
            _run("vtdl", 1, 0.7, metric="top1_1clip"),  # seed 1 lacks the 10-clip metric
            _run("vtdl", 0, 0.9, pretrain="kinetics"),
            _run("moco", 0, 0.3, backbone="i3d"),
        ),
        pretrain=(),
    )
    assert tables.groups(store_) == [("i3d", PRE), (BACKBONE, "kinetics"), (BACKBONE, PRE)]
    result = tables.ablation(store_, clips=10)
    by_heading = {grid.heading: grid for grid in result.grids}
    kinetics = by_heading[f"backbone {BACKBONE}, pretrained on kinetics"]
    ucf = by_heading[f"backbone {BACKBONE}, pretrained on {PRE}"]
    scratch = tables.summarize([0.2, 0.4])
    assert kinetics.rows[0][1] == ucf.rows[0][1] == scratch  # the same scratch runs in both
    assert by_heading[f"backbone i3d, pretrained on {PRE}"].rows[0][1] is None  # no i3d scratch

    grid, _ = tables.all_metrics(store_)
    md = tables.render_markdown("All", "", [grid], show_n=False)
    vtdl_line = next(line for line in md.splitlines() if f"| {PRE} | vtdl |" in line)
    # 2 runs in the row; top1 (1-clip) only from seed 1, top1 (10-clip) only from seed 0.
    assert vtdl_line.endswith("| 2 | 70.0 (n=1) | 50.0 (n=1) |")
    tex = tables.render_latex("All", [grid], show_n=False)
    assert r"synth\_hmdb" in tex and "70.0 (n=1)" in tex and "—" not in tex
