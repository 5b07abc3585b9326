"""The `vtdl` command: one sub-command per pipeline stage.

Each stage lives in its own module, which provides two functions:
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> None
Snakemake rules call these sub-commands, so every stage also runs by hand.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

from vtdl.errors import VtdlError

# (sub-command, module, one-line help, example), in pipeline order.
STAGES: list[tuple[str, str, str, str]] = [
    (
        "synth",
        "vtdl.data.synth",
        "generate the embedded motion-only data set (real video files)",
        "vtdl synth --format hmdb51 --videos data/raw/synth_hmdb/videos "
        "--splits data/raw/synth_hmdb/splits --num-classes 10 --videos-per-class 40",
    ),
    (
        "extract",
        "vtdl.data.extract",
        "decode videos to one frame file per video, a job per class",
        "vtdl extract --format ucf101 --videos /data/UCF-101 --out data/frames/ucf101 "
        "--shard ApplyEyeMakeup",
    ),
    (
        "splits",
        "vtdl.data.splits",
        "turn official split files into canonical train/test lists",
        "vtdl splits --format ucf101 --splits /data/ucfTrainTestlist "
        "--frames data/frames/ucf101 --out data/splits/ucf101",
    ),
    (
        "pretrain",
        "vtdl.pretrain",
        "pretrain an encoder (moco, moco_td, vtdl or supervised)",
        "vtdl pretrain --method vtdl --backbone small3d --seed 0 --dataset synth_ucf "
        "--lists data/splits/synth_ucf --frames data/frames/synth_ucf "
        "--out results/pretrain/synth_ucf/vtdl_small3d_s0",
    ),
    (
        "finetune",
        "vtdl.downstream.finetune",
        "fine-tune an encoder (or scratch) and test it",
        "vtdl finetune --encoder results/pretrain/synth_ucf/vtdl_small3d_s0/encoder.pt "
        "--dataset synth_hmdb --split 1 --lists data/splits/synth_hmdb "
        "--frames data/frames/synth_hmdb --out ft.json",
    ),
    (
        "features",
        "vtdl.downstream.features",
        "frozen-encoder clip features (linear, retrieval)",
        "vtdl features --encoder none --backbone small3d --seed 0 --dataset synth_hmdb "
        "--split 1 --lists data/splits/synth_hmdb --frames data/frames/synth_hmdb "
        "--out scratch.npz",
    ),
    (
        "linear",
        "vtdl.downstream.linear",
        "linear probe on cached features, tested as fine-tuning",
        "vtdl linear --features scratch.npz --out linear.json",
    ),
    (
        "retrieval",
        "vtdl.downstream.retrieval",
        "nearest-neighbour video retrieval on cached features",
        "vtdl retrieval --features scratch.npz --out retrieval.json",
    ),
    (
        "report",
        "vtdl.report",
        "tables and plots rebuilt from the MLflow store alone",
        "vtdl report --out results --clips 10",
    ),
]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the example's line breaks and shows each option's default where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        has_default = not any(action.default is v for v in (None, False, argparse.SUPPRESS))
        if has_default and not action.required and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    """The `vtdl` parser; only `stage`'s module is imported (torch alone takes seconds, and
    Snakemake starts `vtdl` once per job), the other stages are listed by name."""
    parser = argparse.ArgumentParser(
        prog="vtdl",
        description="Self-supervised video representation learning with VTDL, stage by stage.",
        epilog="Errors are one line naming the file, line or key; --debug (or VTDL_DEBUG=1) "
        "shows the traceback instead.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error instead of one line"
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, module_name, help_text, example in STAGES:
        stage_parser = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"example:\n  {example}",
            formatter_class=_HelpFormatter,
        )
        stage_parser.add_argument(  # also after the stage name; SUPPRESS keeps the top one
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        if name == stage:
            module = importlib.import_module(module_name)
            module.add_arguments(stage_parser)
            stage_parser.set_defaults(_run=module.run)
    return parser


# The stages that train data-parallel under torchrun (vtdl.distributed).
DATA_PARALLEL_STAGES = ("pretrain", "finetune")


def _hold_gpus(stage: str, count: int, argv: list[str]) -> int | None:
    """Take this job's own GPUs before torch initialises CUDA (vtdl.gpuslots). Holding more
    than one, launch the stage under torchrun, one process per GPU, and return its exit
    status (the slots stay held here until it ends); None: go on in this process."""
    from vtdl import gpuslots

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return None  # a rank of a job whose launcher holds the GPUs
    held = gpuslots.hold(count)
    if len(held) <= 1:
        return None
    if stage not in DATA_PARALLEL_STAGES:
        raise VtdlError(
            f"--gpus {count}: only {' and '.join(DATA_PARALLEL_STAGES)} run on several GPUs; "
            f"give `vtdl {stage}` --gpus 1"
        )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # one node, a free rendezvous port
        f"--nproc_per_node={len(held)}",
        "-m",
        "vtdl.cli",
        *argv,
    ]
    print(f"vtdl {stage}: GPUs {','.join(held)}: {' '.join(command[1:])}", file=sys.stderr)
    return subprocess.run(command, check=False).returncode


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = {name for name, _, _, _ in STAGES}
    parser = build_parser(next((arg for arg in argv if arg in names), None))
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("VTDL_DEBUG", "") not in ("", "0")
    try:
        if getattr(args, "gpus", 0):
            launched = _hold_gpus(args.stage, args.gpus, argv)
            if launched is not None:
                return launched
        args._run(args)
    except KeyboardInterrupt:
        print(f"vtdl {args.stage}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        if isinstance(err, VtdlError):  # a known bad input: the message names it
            print(f"vtdl {args.stage}: error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
        # Anything else is unexpected: still one line, and how to see more.
        print(
            f"vtdl {args.stage}: error: {_one_line(err)} (run `vtdl --debug {args.stage} ...` "
            "for the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
