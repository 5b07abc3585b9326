"""`vtdl report`: every table and plot rebuilt from the MLflow store alone.

Reads only the store in effect (`MLFLOW_TRACKING_URI`, default `sqlite:///mlflow.db`) and its
artifacts, so the results can be rebuilt after `dvc pull` without any training, and writes:

    <out>/tables/ablation.{md,csv,tex}     docs/method.md §8 ablation, one table per
                                           (backbone, pretraining set), with the paired
                                           differences between rows and their intervals
    <out>/tables/differences.csv           those differences, one row per cell
    <out>/tables/all_metrics.{md,csv,tex}  every final downstream metric
    <out>/tables/pretext.{md,csv,tex}      last-epoch pretext diagnostics per pretraining method
    <out>/plots/                           curves, ablation bars, confusion matrices, and
                                           from the frames under --data (when there): the
                                           retrieval contact sheet and the class montage

Tables are byte-identical on the same store; every file is written atomically, and the plot
folder is swapped in as a whole.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection
from pathlib import Path

from vtdl.fsutil import atomic_dir, atomic_write_text
from vtdl.report import pictures, plots, tables
from vtdl.report.collect import Store, load_store

TABLE_NAMES = ("ablation", "all_metrics", "pretext")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results", help="output root (default: results)")
    parser.add_argument("--backbone", help="only runs of this backbone (default: one table each)")
    parser.add_argument(
        "--pretrain-dataset",
        help="only encoders pretrained on this set, plus scratch (default: one table each)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="only runs of these seeds (the pipeline passes pretrain.seeds; default: every seed)",
    )
    parser.add_argument(
        "--clips",
        type=int,
        help="N of the N-clip columns (default: the largest N > 1 found in the store)",
    )
    parser.add_argument(
        "--experiment", help="MLflow experiment (default: $VTDL_EXPERIMENT or vtdl)"
    )
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    parser.add_argument(
        "--data",
        default="data",
        help="data folder with splits/ and frames/ for the pictures of videos (left out when "
        "absent)",
    )


def write_tables(store: Store, tables_dir: Path, clips: int) -> dict[str, str]:
    """Render the three tables in all three formats; returns {file name: text}."""
    texts: dict[str, str] = {}
    note = tables.CONVENTIONS
    abl = tables.ablation(store, clips)
    intro = (
        f"docs/method.md §8 ablation. Fine-tune and linear probe: video-level top1 of the "
        f"{clips}-clip test; retrieval: R@1. {note}\n\n{tables.DIFFERENCE_NOTE}"
    )
    texts["ablation.md"] = tables.render_markdown("Ablation", intro, abl.grids)
    texts["ablation.tex"] = tables.render_latex("Ablation", abl.grids)
    texts["ablation.csv"] = tables.render_csv(tables.ABLATION_CSV_HEADER, abl.records)
    texts["differences.csv"] = tables.render_csv(tables.DIFFERENCES_CSV_HEADER, abl.differences)

    grid, records = tables.all_metrics(store)
    texts["all_metrics.md"] = tables.render_markdown(
        "All downstream metrics", note, [grid], show_n=False
    )
    texts["all_metrics.tex"] = tables.render_latex("All downstream metrics", [grid], show_n=False)
    texts["all_metrics.csv"] = tables.render_csv(tables.ALL_METRICS_CSV_HEADER, records)

    grid, records = tables.pretext(store)
    intro = (
        "Pretext diagnostics: mean of the last pretraining epoch. `pos beats temporal neg` is "
        "how often the positive is more similar to the anchor than the temporal negative (a "
        "task solved by motion, not appearance, pushes it to 100%). " + note
    )
    if not grid.rows:
        intro += "\n\nNo finished pretraining runs in the store."
    texts["pretext.md"] = tables.render_markdown("Pretext diagnostics", intro, [grid], show_n=False)
    texts["pretext.tex"] = tables.render_latex("Pretext diagnostics", [grid], show_n=False)
    texts["pretext.csv"] = tables.render_csv(tables.PRETEXT_CSV_HEADER, records)

    for name, text in sorted(texts.items()):
        atomic_write_text(tables_dir / name, text)
    return texts


def write_plots(store: Store, plots_dir: Path, clips: int, data: Path | None = None) -> list[Path]:
    with atomic_dir(plots_dir) as tmp:
        written = [
            *plots.pretext_curves(store, tmp),
            *plots.training_curves(store, tmp),
            *plots.ablation_bars(tables.ablation(store, clips), tmp),
            *plots.confusions(store.downstream, clips, tmp),
        ]
        if data is not None:
            written += pictures.contact_sheets(store, data, tmp)
            written += pictures.class_montages(store, data, tmp)
    return [plots_dir / p.relative_to(tmp) for p in written]


def build_report(
    out: str | Path,
    backbone: str | None = None,
    pretrain_dataset: str | None = None,
    clips: int | None = None,
    experiment: str | None = None,
    with_plots: bool = True,
    data: str | Path | None = None,
    seeds: Collection[int] | None = None,
) -> Store:
    """Write every table (and plot) under `out`; returns the runs used.

    Raises:
        VtdlError: no finished downstream runs match the filter in the store in effect.
    """
    out = Path(out)
    store = load_store(
        backbone=backbone, pretrain_dataset=pretrain_dataset, experiment=experiment, seeds=seeds
    )
    n_clips = tables.default_clips(store, clips)
    write_tables(store, out / "tables", n_clips)
    if with_plots:
        write_plots(store, out / "plots", n_clips, Path(data) if data is not None else None)
    return store


def run(args: argparse.Namespace) -> None:
    store = build_report(
        args.out,
        backbone=args.backbone,
        pretrain_dataset=args.pretrain_dataset,
        clips=args.clips,
        seeds=args.seeds,
        experiment=args.experiment,
        with_plots=not args.no_plots,
        data=args.data,
    )
    print(
        f"vtdl report: {len(store.downstream)} downstream and {len(store.pretrain)} pretraining "
        f"runs from {store.uri} -> {args.out}/tables"
        + ("" if args.no_plots else f", {args.out}/plots"),
        file=sys.stderr,
    )
