"""The package's shape: no import cycle in util/ (imports inside functions count; those
only for type checking do not), and one output schema that every writer uses."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from training.paths import REPO

UTIL = REPO / "util"


def _imports(path: Path) -> set[str]:
    """The util modules a module imports (relative imports), type-checking ones aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.ImportFrom) or node.level != 1:
            continue
        if node.module:
            found.add(node.module.split(".")[0])
        else:
            found |= {alias.name for alias in node.names}
    return found


def test_util_has_no_import_cycle() -> None:
    graph = {p.stem: _imports(p) for p in UTIL.glob("*.py")}
    graph = {name: {m for m in deps if m in graph} for name, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        assert state.get(name) != 1, " -> ".join([*trail, name])
        state[name] = 1
        for dep in sorted(graph[name]):
            visit(dep, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        visit(name, [])


def test_a_new_face_field_reaches_both_writers(monkeypatch) -> None:
    """A field declared in util/schema.py comes out in the JSON record and in the
    Parquet schema, with nothing else changed."""
    pyarrow = pytest.importorskip("pyarrow")  # the Parquet writer's library

    from util import schema
    from util.face import Face

    extra = schema.Field("mood", schema.Kind.FLOAT, "test field", lambda f: 0.5)
    monkeypatch.setattr(schema, "FACE_FIELDS", (*schema.FACE_FIELDS, extra))
    face = Face(np.array([0.0, 0, 10, 10]), 0.9, np.zeros((68, 2)), np.ones(68))
    record = json.loads(json.dumps(schema.record_json("a.png", [face], None, (10, 10, 3))))
    assert record["faces"][0]["mood"] == 0.5
    assert schema.parquet_schema(pyarrow).field("mood").type == pyarrow.float64()


def test_readme_field_list_is_the_schema() -> None:
    """The README's field list is generated (python -m tools.readme_fields) and current."""
    from tools.readme_fields import readme_block

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme_block() in readme


def test_readme_aflw_table_is_the_results_file() -> None:
    """The README's AFLW2000-3D figures are the results file's, as measured."""
    results = (REPO / "benchmarks" / "results" / "aflw2000" / "val.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert results.strip() in readme


def test_compare_outputs_names_the_first_difference(tmp_path: Path) -> None:
    from tools.compare_outputs import compare

    same = {"image": "a.png", "faces": [{"bbox": [1, 2, 3, 4], "score": 0.9}]}
    moved = {"image": "b.png", "faces": [{"bbox": [1, 2, 3, 5], "score": 0.9}]}
    ours, theirs = tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl"
    ours.write_text("\n".join(json.dumps(r) for r in (same, moved)), encoding="utf-8")
    moved_back = dict(moved, faces=[{"bbox": [1, 2, 3, 4], "score": 0.9}])
    theirs.write_text("\n".join(json.dumps(r) for r in (same, moved_back)), encoding="utf-8")
    assert compare(ours, theirs) == [("b.png", ".faces[0].bbox[3] (5 against 4)")]
    assert compare(ours, ours) == []


def test_readme_results_are_the_results_files() -> None:
    """The README's results table is generated (python -m tools.readme_results) from
    benchmarks/results/ and current."""
    from tools.readme_results import readme_block

    assert readme_block() in (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_and_model_card_stay_short() -> None:
    # Issue 34: the README is the package's index page, the model card one card per file.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    card = (REPO / "models" / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300 and len(readme) <= 25_000
    assert len(card.splitlines()) <= 300
