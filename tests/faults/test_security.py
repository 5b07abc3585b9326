"""Files that could run code are refused without running it; names never reach a shell.

A checkpoint or encoder carrying a pickle payload (one that would create a file when
unpickled) is refused in one line that says what to do, and the payload never runs; the
package builds no shell command strings and parses YAML only safely; `make ui` binds to
127.0.0.1.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vtdl.checkpoint import load_checkpoint, load_encoder
from vtdl.errors import VtdlError

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "vtdl"


class _Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("loader", [load_checkpoint, load_encoder])
def test_a_checkpoint_with_a_pickle_payload_is_refused_without_running_it(tmp_path, fault, loader):
    fault("security", f"pickle payload in a file read by {loader.__name__}")
    marker, path = tmp_path / "payload-ran", tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3, "model": {}, "extra": _Payload(marker)}, path)
    with pytest.raises(VtdlError) as err:
        loader(path)
    message = str(err.value)
    assert not marker.exists()  # the payload did not run
    assert "\n" not in message and str(path) in message
    assert "move or delete the file" in message and "weights_only=False" not in message


def test_the_cli_refuses_it_in_one_line(tmp_path, fault):
    fault("security", "pickle payload given to vtdl finetune --encoder")
    marker, path = tmp_path / "payload-ran", tmp_path / "encoder.pt"
    torch.save({"format": "vtdl-encoder/1", "extra": _Payload(marker)}, path)
    lists = tmp_path / "lists"
    (lists / "split1").mkdir(parents=True)
    # Lists the settings accept (clips fit the videos, a labelled batch fits), so that the
    # encoder file is what the stage reads next.
    (lists / "classes.csv").write_text("label,class\n0,a\n1,b\n")
    rows = "".join(
        f"{c}/x{i:02d}.avi,{label},{c},60\n" for label, c in enumerate("ab") for i in range(12)
    )
    for name in ("train", "test"):
        (lists / "split1" / f"{name}.csv").write_text("path,label,class,frames\n" + rows)
    (tmp_path / "frames").mkdir()
    result = subprocess.run(
        [str(Path(sys.executable).with_name("vtdl")), "finetune", "--encoder", str(path),
         "--dataset", "d", "--split", "1", "--lists", str(lists), "--frames",
         str(tmp_path / "frames"), "--out", str(tmp_path / "o.json"), "--settings",
         str(ROOT / "params.yaml")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "refused" in lines[0] and not marker.exists()


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            yield node


def test_no_shell_strings_and_only_safe_yaml_in_the_package(fault):
    fault("security", "shell strings or unsafe YAML in the package (static check)")
    for path in sorted(PACKAGE.rglob("*.py")):
        for call in _calls(path):
            name = ast.unparse(call.func)
            assert name not in ("os.system", "os.popen", "yaml.load", "yaml.unsafe_load"), (
                f"{path}: {name}"
            )
            for keyword in call.keywords:
                if keyword.arg == "shell":
                    assert ast.unparse(keyword.value) == "False", f"{path}: {name}(shell=...)"


def test_make_ui_binds_to_localhost_only(fault):
    fault("security", "make ui listens on 127.0.0.1 only")
    makefile = (ROOT / "Makefile").read_text()
    (line,) = [x for x in makefile.splitlines() if "mlflow server" in x]
    assert re.search(r"--host 127\.0\.0\.1\b", makefile) and "0.0.0.0" not in makefile, line
