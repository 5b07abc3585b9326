"""The vocabulary is defined once (vtdl.names) and the package keeps its boundaries.

The registry feeds the params schema, the CLI, the rules and the report; these tests fail when
a second list of methods, backbones or metric names appears, when a module other than
vtdl.tracking talks to MLflow, or when computed code inputs miss an import.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from vtdl import codeinputs, names
from vtdl.codeinputs import stage_files, stage_modules
from vtdl.config import load_schema, load_yaml, validate_params
from vtdl.errors import VtdlError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vtdl"


def test_metric_names_round_trip_through_their_parsers():
    assert names.clip_metric("top5", 10) == "top5_10clip"
    assert names.parse_clip_metric("meanclass_1clip") == ("meanclass", 1)
    assert names.parse_clip_metric("top1_10clips") is None
    assert names.parse_clip_metric("train_top1") is None
    assert names.parse_recall_metric(names.recall_metric(20)) == 20
    assert names.is_final_metric("recall_at_5") and not names.is_final_metric("train_loss")
    key = f"{names.metric_prefix('synth_hmdb', 2, 'linear')}/top1_10clip"
    assert key == "synth_hmdb/split2/linear/top1_10clip"
    assert names.split_metric_key(key) == ("synth_hmdb/split2/linear", "top1_10clip")


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("moco_td_r3d_18_s0.json", ("moco_td", "r3d_18", "0")),
        ("vtdl_r2plus1d_18_s12.json", ("vtdl", "r2plus1d_18", "12")),
        ("scratch_small3d_s3.json", ("scratch", "small3d", "3")),
    ],
)
def test_result_file_names_split_at_the_known_backbone(filename, expected):
    parsed = names.parse_result_name(filename)
    assert (parsed["method"], parsed["backbone"], parsed["seed"]) == expected
    run = names.RUN_NAME.format(method=expected[0], backbone=expected[1], seed=expected[2])
    assert parsed["run"] == run


@pytest.mark.parametrize("filename", ["vtdl_unknown_s0.json", "vtdl_small3d_s0.npz", "x.json"])
def test_other_file_names_are_not_results(filename):
    assert names.parse_result_name(filename) is None


def test_the_schema_offers_exactly_the_registered_methods_and_backbones():
    pretrain = load_schema()["properties"]["pretrain"]["properties"]
    assert pretrain["methods"]["items"]["enum"] == list(names.SELF_SUPERVISED_METHODS)
    assert pretrain["backbones"]["items"]["enum"] == list(names.BACKBONES)
    params = load_yaml(ROOT / "params.yaml")
    params["pretrain"]["methods"] = ["moco", "mocov9"]
    with pytest.raises(VtdlError, match=r"pretrain\.methods\.1: 'mocov9' is not one of"):
        validate_params(params)


def test_backbone_names_match_the_model_constructors():
    from vtdl.models import BACKBONES

    assert tuple(BACKBONES) == names.BACKBONES


def test_every_compared_row_is_a_method_and_each_kind_is_known():
    kinds = {names.BASELINE, names.SELF_SUPERVISED, names.REFERENCE}
    for name, method in names.METHODS.items():
        assert method.kind in kinds, name
        assert set(method.compare_to) <= set(names.METHODS) - {name}
        if method.kind != names.SELF_SUPERVISED:
            assert not (method.temporal_negative or method.tca), name
    assert [n for n, m in names.METHODS.items() if m.kind == names.BASELINE] == [names.SCRATCH]
    assert names.PRETRAINED_METHODS[-1] == names.SUPERVISED


def test_rule_files_spell_no_method_backbone_or_result_path():
    """Wildcard regexes and output patterns come from vtdl.names, not from literals."""
    words = [w for w in (*names.METHODS, *names.BACKBONES) if w != "vtdl"]  # also the package
    either = "|".join(map(re.escape, (*names.METHODS, *names.BACKBONES)))
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        for word in words:
            assert not re.search(rf"[\"'|]{re.escape(word)}[\"'|]", code), (path.name, word)
        assert not re.search(rf"\|({either})\b|\b({either})\|", code), path.name  # a regex
        assert "_s{seed}" not in code, path.name


def test_the_split_list_layout_is_spelt_only_in_names(tmp_path):
    """`vtdl splits` writes, and the stages read, the files and headers names.py defines."""
    from vtdl.data.clips import read_list
    from vtdl.downstream.job import read_classes

    assert names.split_list("data/splits/x", 2, "test") == Path("data/splits/x/split2/test.csv")
    with pytest.raises(ValueError, match="part"):
        names.split_list("l", 1, "val")
    rows = ",".join(names.LIST_HEADER) + "\na/v.avi,0,a,12\n"
    names.split_list(tmp_path, 1, "train").parent.mkdir(parents=True)
    names.split_list(tmp_path, 1, "train").write_text(rows)
    assert [e.path for e in read_list(names.split_list(tmp_path, 1, "train"))] == ["a/v.avi"]
    (tmp_path / names.CLASSES_FILE).write_text(",".join(names.CLASSES_HEADER) + "\n0,a\n")
    assert read_classes(tmp_path / names.CLASSES_FILE) == ["a"]
    for path in sorted((ROOT / "src" / "vtdl").rglob("*.py")):
        if path.name == "names.py":
            continue
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        for literal in ('"classes.csv"', '"train.csv"', '"test.csv"', '"path", "label"'):
            assert literal not in code, (path.name, literal)


# ---- package boundaries ------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _package_modules() -> dict[str, set[str]]:
    return {p.relative_to(PACKAGE).as_posix(): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_only_tracking_talks_to_mlflow_or_its_sqlite_store():
    for module, imported in _package_modules().items():
        if module == "tracking.py":
            continue
        offending = {name for name in imported if name.split(".")[0] in ("mlflow", "sqlite3")}
        assert not offending, f"{module} imports {sorted(offending)}; go through vtdl.tracking"


def test_metrics_are_pure_and_drawing_lives_in_figures():
    drawing = {"matplotlib"}  # (PIL decodes JPEG frames: not drawing)
    for module, imported in _package_modules().items():
        if module in ("figures.py",) or module.startswith("report/"):
            continue
        offending = {name for name in imported if name.split(".")[0] in drawing}
        assert not offending, f"{module} imports {sorted(offending)}; draw in vtdl.figures"


def test_nothing_imports_the_cli():
    for module, imported in _package_modules().items():
        assert "vtdl.cli" not in imported, f"{module} imports vtdl.cli"


def test_names_and_code_inputs_stay_light():
    """Snakemake imports them to build the job graph: no third-party import at all."""
    for module in ("names.py", "codeinputs.py"):
        imported = _imports(PACKAGE / module)
        assert {name.split(".")[0] for name in imported} <= {
            "__future__",
            "ast",
            "dataclasses",
            "functools",
            "hashlib",
            "json",
            "os",
            "pathlib",
            "re",
        }, module


# ---- computed code inputs ----------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_stage_modules_follow_every_kind_of_import(tmp_path):
    package = _write(
        tmp_path / "vtdl",
        {
            "__init__.py": "",
            "stage.py": "from vtdl import helper\nfrom vtdl.sub.leaf import f\n"
            "def run():\n    import vtdl.lazy\n    from .rel import g\n",
            "helper.py": "import os\nimport vtdl.stage\n",  # a cycle back to the stage
            "sub/__init__.py": "",
            "sub/leaf.py": "from . import sibling\n\ndef f():\n    pass\n",
            "sub/sibling.py": "",
            "lazy.py": "",
            "rel.py": "",
            "unused.py": "import vtdl.stage\n",  # imports the stage, is not imported by it
        },
    )
    assert stage_modules("vtdl.stage", package) == (
        "vtdl",
        "vtdl.helper",
        "vtdl.lazy",
        "vtdl.rel",
        "vtdl.stage",
        "vtdl.sub",
        "vtdl.sub.leaf",
        "vtdl.sub.sibling",
    )
    assert "sub/__init__.py" in stage_files("vtdl.stage", package)
    with pytest.raises(ValueError, match="no module"):
        stage_modules("vtdl.missing", package)


@pytest.fixture
def cache_file(tmp_path):
    """The import cache in a file of the test's own; in memory again afterwards."""
    file = tmp_path / "cache" / "code-imports.json"
    codeinputs.use_cache_file(file)
    yield file
    codeinputs.use_cache_file(None)


def test_code_inputs_come_from_the_cache_file_until_a_module_changes(
    tmp_path, cache_file, monkeypatch
):
    package = _write(
        tmp_path / "vtdl",
        {"__init__.py": "", "stage.py": "from vtdl import a\n", "a.py": "", "b.py": ""},
    )
    assert stage_files("vtdl.stage", package) == ["__init__.py", "a.py", "stage.py"]
    assert cache_file.is_file()

    # A later Snakemake start (a new process): nothing is parsed, the same files come out.
    def no_parsing(*args):
        raise AssertionError("parsed although the cache file knows this text")

    monkeypatch.setattr(codeinputs, "_parse_imports", no_parsing)
    codeinputs.use_cache_file(cache_file)
    assert stage_files("vtdl.stage", package) == ["__init__.py", "a.py", "stage.py"]

    # An edited module is parsed again (and only it): its new import counts.
    monkeypatch.undo()
    (package / "a.py").write_text("import vtdl.b\n")
    codeinputs.use_cache_file(cache_file)
    assert stage_files("vtdl.stage", package) == ["__init__.py", "a.py", "b.py", "stage.py"]


def test_a_broken_cache_file_or_an_older_parser_parse_again(tmp_path, cache_file, monkeypatch):
    package = _write(
        tmp_path / "vtdl", {"__init__.py": "", "stage.py": "import vtdl.a\n", "a.py": ""}
    )
    cache_file.parent.mkdir(parents=True)
    for junk in ("{not json", '["a list"]', '{"modules": {"x": 3}}'):
        cache_file.write_text(junk)
        codeinputs.use_cache_file(cache_file)
        assert stage_files("vtdl.stage", package) == ["__init__.py", "a.py", "stage.py"]
        assert json.loads(cache_file.read_text())["modules"], "rewritten with what was parsed"

    # Entries under the right keys but holding something other than module names.
    entries = json.loads(cache_file.read_text())["modules"]
    cache_file.write_text(json.dumps({"modules": {k: [7] for k in entries}}))
    codeinputs.use_cache_file(cache_file)
    assert stage_files("vtdl.stage", package) == ["__init__.py", "a.py", "stage.py"]

    # What an older parser found (here: a wrong answer) is never reused once the parser changed.
    cache_file.write_text(json.dumps({"modules": {k: [] for k in entries}}))
    monkeypatch.setattr(codeinputs, "_PARSER", "a-newer-parser")
    codeinputs.use_cache_file(cache_file)
    assert stage_files("vtdl.stage", package) == ["__init__.py", "a.py", "stage.py"]


def test_the_real_stages_import_what_their_jobs_run():
    assert "progress.py" in stage_files("vtdl.data.extract")
    assert "data/video.py" not in stage_files("vtdl.data.extract")
    linear = stage_files("vtdl.downstream.linear")
    assert "downstream/cached.py" in linear and not any(f.startswith("models/") for f in linear)
    assert "cli.py" not in stage_files("vtdl.pretrain")
