"""The `vtdl` command: one sub-command per pipeline stage.

Each stage lives in its own module, which provides two functions:
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> None
Snakemake rules call these sub-commands, so every stage also runs by hand.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vtdl.errors import VtdlError

# (sub-command, module, one-line help), in pipeline order.
STAGES: list[tuple[str, str, str]] = [
    ("synth", "vtdl.data.synth", "generate the embedded motion-only data set (real video files)"),
    ("extract", "vtdl.data.extract", "decode videos to one frame file per video, a job per class"),
    ("splits", "vtdl.data.splits", "turn official split files into canonical train/test lists"),
    ("pretrain", "vtdl.pretrain", "pretrain an encoder (moco, moco_td, vtdl or supervised)"),
    ("finetune", "vtdl.downstream.finetune", "fine-tune an encoder (or scratch) and test it"),
    ("features", "vtdl.downstream.features", "frozen-encoder clip features (linear, retrieval)"),
    ("linear", "vtdl.downstream.linear", "linear probe on cached features, tested as fine-tuning"),
    (
        "retrieval",
        "vtdl.downstream.retrieval",
        "nearest-neighbour video retrieval on cached features",
    ),
    ("report", "vtdl.report", "tables and plots rebuilt from the MLflow store alone"),
]


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    """The `vtdl` parser; only `stage`'s module is imported (torch alone takes seconds, and
    Snakemake starts `vtdl` once per job), the other stages are listed by name."""
    parser = argparse.ArgumentParser(
        prog="vtdl",
        description="Self-supervised video representation learning with VTDL, stage by stage.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, module_name, help_text in STAGES:
        stage_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == stage:
            module = importlib.import_module(module_name)
            module.add_arguments(stage_parser)
            stage_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = {name for name, _, _ in STAGES}
    parser = build_parser(next((arg for arg in argv if arg in names), None))
    args = parser.parse_args(argv)
    try:
        args._run(args)
    except VtdlError as err:
        print(f"vtdl {args.stage}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vtdl {args.stage}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
