"""The `vtdl` command: every stage is listed, documents its options, and fails in one line."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vtdl import cli
from vtdl.cli import STAGES, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
VTDL = Path(sys.executable).with_name("vtdl")
NAMES = [name for name, _, _, _ in STAGES]


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, _, help_text, _ in STAGES:
        assert name in out and help_text in out
    assert "--debug" in out


@pytest.mark.parametrize("name", NAMES)
def test_each_stage_documents_its_options_defaults_and_an_example(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: vtdl {name}" in out
    example = next(e for n, _, _, e in STAGES if n == name)
    assert "example:" in out and example.split()[2] in out
    parser = build_parser(name)
    stage_parser = parser._subparsers._group_actions[0].choices[name]
    for action in stage_parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS:
            assert action.help, f"{name} {action.option_strings}: no help"
            if action.default not in (None, False) and not action.required:
                assert "(default:" in stage_parser.format_help(), (name, action.dest)
    # The example is a valid command line of the stage.
    args = parser.parse_args(shlex.split(example)[1:])
    assert args.stage == name


def test_unknown_stage_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrian"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'pretrian'" in capsys.readouterr().err


PARAMS = str(ROOT / "params.yaml")
# One bad input per stage, and what its one-line error must name.
ERROR_CASES = {
    "synth": (["--format", "ucf101", "--videos", "v", "--splits", "s", "--num-classes", "0"],
              "--num-classes"),
    "extract": (["--format", "ucf101", "--videos", "missing", "--out", "f", "--shard", "A"],
                "missing/A"),
    "splits": (["--format", "ucf101", "--splits", "missing", "--frames", "f", "--out", "o"],
               "f: frames directory not found"),
    "pretrain": (["--method", "vtdl", "--backbone", "small3d", "--seed", "0", "--dataset", "d",
                  "--lists", "missing", "--frames", "f", "--out", "o", "--settings", PARAMS],
                 "missing/split1/train.csv"),
    "finetune": (["--encoder", "missing.pt", "--dataset", "d", "--split", "1", "--lists",
                  "lists", "--frames", "f", "--out", "o.json", "--settings", PARAMS], "--frames"),
    "features": (["--encoder", "none", "--backbone", "small3d", "--seed", "0", "--dataset", "d",
                  "--split", "1", "--lists", "lists", "--frames", "f", "--out", "o.npz",
                  "--settings", PARAMS], "--frames"),
    "linear": (["--features", "missing.npz", "--out", "o.json", "--settings", PARAMS],
               "missing.npz"),
    "retrieval": (["--features", "f.npz", "--out", "o.json", "--settings", '{"bad'],
                  "--settings"),
    "report": (["--out", "r"], "does not exist"),
}  # fmt: skip


def test_every_stage_has_an_error_case():
    assert set(ERROR_CASES) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_errors_are_one_line_naming_the_input_without_a_traceback(name, tmp_path):
    argv, named = ERROR_CASES[name]
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none.db'}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [str(VTDL), name, *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vtdl {name}: error: "), result.stderr
    assert named in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "none.db").exists()  # a failed check creates no store


def test_an_unexpected_error_is_one_line_with_a_hint_and_debug_shows_the_traceback(
    monkeypatch, capsys
):
    def broken(args):
        raise OSError("disk on fire")

    monkeypatch.setattr(cli.importlib, "import_module", lambda name: _Stage(broken))
    assert main(["report", "--out", "r"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "vtdl report: error: OSError: disk on fire (run `vtdl --debug report ...` for the "
        "traceback)"
    )
    with pytest.raises(OSError, match="disk on fire"):
        main(["--debug", "report"])
    with pytest.raises(OSError, match="disk on fire"):
        main(["report", "--debug"])
    monkeypatch.setenv("VTDL_DEBUG", "1")
    with pytest.raises(OSError, match="disk on fire"):
        main(["report"])


class _Stage:
    """A stand-in stage module whose run raises."""

    def __init__(self, run):
        self.run = run

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--out", default="results")


# The stages that run no network load neither torch nor MLflow: each Snakemake job pays its
# own imports (README "Where the 2-core budget goes").
LIGHT_STAGES = {
    "vtdl.data.synth": ("torch", "mlflow"),
    "vtdl.data.extract": ("torch", "mlflow"),
    "vtdl.data.splits": ("torch", "mlflow"),
    "vtdl.downstream.linear": ("torch",),
    "vtdl.downstream.retrieval": ("torch",),
    "vtdl.report": ("torch",),
}


def _heavy_imports_of(code: str, heavy: tuple[str, ...]) -> str:
    """Which of `heavy` a fresh interpreter has imported after running `code`."""
    probe = f"import sys\n{code}\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("module", sorted(LIGHT_STAGES))
def test_light_stages_start_without_heavy_imports(module):
    found = _heavy_imports_of(f"import {module}", LIGHT_STAGES[module])
    assert found == "[]", f"{module} imports {found}"


def test_building_the_job_graph_imports_neither_torch_mlflow_nor_pyav():
    """What common.smk runs while Snakemake builds the DAG, on the shipped params.yaml: every
    `make reproduce`, a no-op one included, pays for these imports (README, make bench)."""
    code = (
        "from vtdl.config import load_yaml, validate_params\n"
        "from vtdl.data.sizes import check_data_params\n"
        "from vtdl.codeinputs import stage_files\n"
        f"params = load_yaml({str(ROOT / 'params.yaml')!r})\n"
        "validate_params(params, source='params')\n"
        "check_data_params(params, source='params')\n"
        "stage_files('vtdl.pretrain'); stage_files('vtdl.data.synth')"
    )
    assert _heavy_imports_of(code, ("av", "mlflow", "torch")) == "[]"
