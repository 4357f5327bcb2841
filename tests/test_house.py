"""The house rules a newcomer relies on: dvc.yaml's code deps match the imports, functions stay
short, classes stay small, first-party modules have no import cycles, every stage is a `main(params)`."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tools.dvc_deps import check, module_file

CODE = sorted([*REPO.glob("src/**/*.py"), *REPO.glob("stages/*.py")])
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 120


def test_dvc_yaml_deps_match_the_imports():
    assert check(REPO) == {}, "run `python tools/dvc_deps.py` and fix dvc.yaml"


@pytest.fixture
def copy_of_repo(tmp_path: Path) -> Path:
    for name in ("src", "stages"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def _edit_deps(root: Path, stage: str, remove: str = "", add: str = "") -> None:
    d = yaml.safe_load((root / "dvc.yaml").read_text())
    deps = d["stages"][stage]["deps"]
    if remove:
        deps.remove(remove)
    if add:
        deps.append(add)
    (root / "dvc.yaml").write_text(yaml.safe_dump(d, sort_keys=False))


def test_a_removed_dep_is_caught(copy_of_repo):
    _edit_deps(copy_of_repo, "train", remove="src/data/cifar.py")
    assert check(copy_of_repo) == {"train": {"missing": ["src/data/cifar.py"], "unused": []}}


def test_a_module_imported_only_indirectly_is_caught(copy_of_repo):
    # stages/evaluate.py never names src/schema.py: it comes through src.params
    _edit_deps(copy_of_repo, "evaluate", remove="src/schema.py")
    assert check(copy_of_repo)["evaluate"]["missing"] == ["src/schema.py"]


def test_a_dep_the_stage_never_imports_is_caught(copy_of_repo):
    _edit_deps(copy_of_repo, "download", add="src/teach/ops.py")
    assert check(copy_of_repo) == {"download": {"missing": [], "unused": ["src/teach/ops.py"]}}


def test_a_new_model_file_is_a_dep_of_every_stage_that_builds_models(copy_of_repo):
    (copy_of_repo / "src/models/extra.py").write_text("from src.models.base import register\n")
    _edit_deps(copy_of_repo, "evaluate", remove="src/models")
    _edit_deps(copy_of_repo, "evaluate", add="src/models/__init__.py")
    missing = check(copy_of_repo)["evaluate"]["missing"]
    assert "src/models/extra.py" in missing and "src/models/base.py" in missing


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_every_function_is_short():
    lengths = {f"{p.relative_to(REPO)}:{name}": n for p in CODE for name, n in _functions(p)}
    longest = max(lengths, key=lengths.get)
    print(f"longest function: {longest}, {lengths[longest]} lines")
    too_long = {k: v for k, v in lengths.items() if v >= MAX_FUNCTION_LINES}
    assert not too_long, f"split these (>= {MAX_FUNCTION_LINES} lines): {too_long}"


def _classes(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            yield node.name, node.end_lineno - node.lineno + 1


def test_every_class_is_small():
    """A class that outgrows a screenful is doing several jobs: give each its own (see src/training/loop.py)."""
    lengths = {f"{p.relative_to(REPO)}:{name}": n for p in CODE for name, n in _classes(p)}
    longest = max(lengths, key=lengths.get)
    print(f"longest class: {longest}, {lengths[longest]} lines")
    too_long = {k: v for k, v in lengths.items() if v > MAX_CLASS_LINES}
    assert not too_long, f"split these (> {MAX_CLASS_LINES} lines): {too_long}"


def _direct_imports(path: Path) -> set[Path]:
    """First-party files `path` imports by name: `from a.b import c` is a/b/c.py when that is a
    module, else a/b (the parent packages' __init__ files are not counted as edges)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [
                f"{node.module}.{a.name}" if module_file(REPO, f"{node.module}.{a.name}") else node.module
                for a in node.names
            ]
        for n in names:
            f = module_file(REPO, n) if n.split(".")[0] in ("src", "stages", "benchmarks") else None
            if f is not None and f != path:
                out.add(f)
    return out


def test_no_import_cycles():
    graph = {p: _direct_imports(p) for p in CODE}
    state: dict[Path, str] = {}

    def visit(p: Path, trail: list[Path]) -> None:
        state[p] = "open"
        for q in graph.get(p, ()):
            if state.get(q) == "open":
                cycle = trail[trail.index(q) :] + [q] if q in trail else [p, q]
                raise AssertionError("import cycle: " + " -> ".join(str(c.relative_to(REPO)) for c in cycle))
            if q not in state:
                visit(q, trail + [q])
        state[p] = "done"

    for p in CODE:
        if p not in state:
            visit(p, [p])


@pytest.mark.parametrize("stage", sorted(p.stem for p in REPO.glob("stages/*.py") if not p.stem.startswith("_")))
def test_every_stage_is_a_main_function(stage):
    tree = ast.parse((REPO / "stages" / f"{stage}.py").read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    guard = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert len(guard) == 1 and ast.unparse(guard[0].body[0]) == f"run_stage({stage!r}, main)"


def test_the_reading_guide_names_every_module():
    guide = (REPO / "docs/code.md").read_text()
    missing = [
        str(p.relative_to(REPO))
        for p in CODE
        if p.stat().st_size and p.parent.name != "stages" and f"`{p.relative_to(REPO)}`" not in guide
    ]
    assert not missing, f"docs/code.md does not describe: {missing}"


def test_the_reading_guide_lists_what_each_module_imports():
    """The guide's imports column is how a reader finds a module's neighbours: it must name exactly
    the project modules the file imports (anywhere in it, types-only imports included)."""
    guide = (REPO / "docs/code.md").read_text()
    one_file = r"^\| `((?:src|stages|benchmarks)/[\w/]+\.py)`(?: \+ `[^`]+`)? \|"  # not the row of all stages
    rows = re.findall(one_file + r".*\| ([^|\n]*) \|$", guide, re.M)
    assert len(rows) > 40, len(rows)
    wrong = {}
    for path, cell in rows:
        named = set(re.findall(r"`([\w.]+)`", cell))
        files = _direct_imports(REPO / path)
        actual = {".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for f in files}
        if named != actual:
            wrong[path] = {"not named": sorted(actual - named), "not imported": sorted(named - actual)}
    assert not wrong, wrong


def test_no_two_modules_share_a_name():
    """A name says which file: `theory` or `compare` in two places sends a reader to the wrong one."""
    files = [*CODE, *REPO.glob("benchmarks/*.py"), *REPO.glob("tools/*.py")]
    names: dict[str, list[str]] = {}
    for p in files:
        if p.name not in ("__init__.py", "__main__.py"):
            names.setdefault(p.stem.lstrip("_"), []).append(str(p.relative_to(REPO)))
    packages = {p.name: str(p.relative_to(REPO)) for p in REPO.glob("src/*/") if (p / "__init__.py").exists()}
    for name, where in packages.items():
        names.setdefault(name, []).append(where + "/")
    assert {n: w for n, w in names.items() if len(w) > 1} == {}


def test_import_aliases_are_words():
    """`import x as T` makes a reader look up what T is; PyTorch's own `F` is the one exception."""
    short = []
    for p in [*CODE, *REPO.glob("benchmarks/*.py"), *REPO.glob("tests/*.py")]:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    full = f"{getattr(node, 'module', None) or ''}.{a.name}".strip(".")
                    if a.asname and len(a.asname) == 1 and full != "torch.nn.functional":
                        short.append(f"{p.relative_to(REPO)}: {full} as {a.asname}")
    assert short == []
