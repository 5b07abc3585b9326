"""The `vtdl` command: every stage is listed and parses its own options."""

from __future__ import annotations

import pytest

from vtdl.cli import STAGES, main


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, _, help_text in STAGES:
        assert name in out and help_text in out


@pytest.mark.parametrize("name", [name for name, _, _ in STAGES])
def test_each_stage_has_its_options(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: vtdl {name}" in capsys.readouterr().out


def test_unknown_stage_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrian"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'pretrian'" in capsys.readouterr().err
