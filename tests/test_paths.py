"""Each output path is spelled once, in src/paths.py: dvc.yaml's outs all have a constant there, and
no stage or src module writes one out as a string of its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from src import paths
from tests.conftest import REPO

CONSTANTS = {name: value for name, value in vars(paths).items() if isinstance(value, Path)}
# being refactored elsewhere: they still spell their paths (none today)
CODE = sorted(
    p
    for p in [*REPO.glob("src/**/*.py"), *REPO.glob("stages/*.py")]
    if p.relative_to(REPO).as_posix() != "src/paths.py"
)


def dvc_outs() -> list[Path]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return [Path(o if isinstance(o, str) else next(iter(o))) for st in stages.values() for o in st.get("outs", [])]


def test_every_dvc_out_has_a_constant():
    missing = [str(o) for o in dvc_outs() if o not in CONSTANTS.values()]
    assert not missing, f"add these to src/paths.py: {missing}"


def test_every_constant_is_an_out_or_inside_one():
    outs = dvc_outs()
    stray = [
        name
        for name, p in CONSTANTS.items()
        if p not in paths.NOT_OUTS and not any(p == o or o in p.parents for o in outs)
    ]
    assert not stray, f"not an out of dvc.yaml (a typo? else list it in paths.NOT_OUTS): {stray}"


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes: they describe the outputs in words and may name them."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


# an output path inside a string: a name under models/, metrics/ or plots/ (not as part of a longer
# path, like DVCLive's dvclive/train/plots/metrics; a bare "models/" names the folder), or any out of
# dvc.yaml by its full name (a one-word out such as `report` only as a folder, "report/…": the word
# alone is prose, or a stage's name)
PATTERN = re.compile(
    r"(?<![\w./-])(models|metrics|plots)/\w|"
    + "|".join(
        re.escape(o.as_posix()) if "/" in o.as_posix() else rf"(?<![\w./-]){re.escape(o.as_posix())}/"
        for o in dvc_outs()
    )
)


def spelled_paths(path: Path) -> list[str]:
    """`line: text` of every string in `path` (f-string parts included, docstrings not) that names an output."""
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    hits = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and PATTERN.search(node.value)
    ]
    return [f"{node.lineno}: {node.value!r}" for node in sorted(hits, key=lambda n: (n.lineno, n.col_offset))]


def test_the_check_sees_a_spelled_path(tmp_path):
    f = tmp_path / "stage.py"
    f.write_text(
        '"""Writes models/best.pt."""\nA = "models/best.pt"\nB = f"{A}: see plots/eval/x"\n'
        'C = "dvclive/train/plots/metrics"\nD = "data/subset.pt"\nE = "the repository (models/, plots/)"\n'
    )
    assert [s.split(":")[0] for s in spelled_paths(f)] == ["2", "3", "4", "5"]


def test_no_stage_or_src_module_spells_an_output_path():
    found = {str(p.relative_to(REPO)): hits for p in CODE if (hits := spelled_paths(p))}
    assert not found, f"use the constants of src/paths.py (in messages too, via an f-string): {found}"
