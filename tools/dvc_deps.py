"""Do dvc.yaml's code deps match what each stage's code imports? Lists, per stage, the first-party
modules its command imports (directly or through other modules, anywhere in a file) that `deps:`
does not cover, and the code deps it lists that it never imports.

    python tools/dvc_deps.py        # exit 1 when a stage misses or over-lists a module

tests/test_house.py runs the same check, so a missing dep fails the suite.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import yaml

PACKAGES = ("src", "stages")  # first-party code; anything else is data or a third-party import


def module_file(root: Path, module: str) -> Path | None:
    """`a.b` → a/b.py or a/b/__init__.py under root, if either exists."""
    p = root.joinpath(*module.split("."))
    for f in (p.with_suffix(".py"), p / "__init__.py"):
        if f.is_file():
            return f
    return None


def _imported_names(tree: ast.AST, path: Path, root: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                pkg = path.relative_to(root).parent.parts[: len(path.relative_to(root).parent.parts) - node.level + 1]
                base = ".".join([*pkg, *([node.module] if node.module else [])])
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def imports(root: Path, entry: Path) -> set[Path]:
    """Every first-party file `entry` loads, itself included (package __init__ files on the way,
    and every module of a package that imports its folder's files dynamically, like src/models)."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        text = f.read_text()
        if "pkgutil.iter_modules(__path__)" in text:  # a package that imports every file of its folder
            todo += [m for m in f.parent.glob("*.py") if m.name != "__init__.py"]
        for name in _imported_names(ast.parse(text), f, root):
            parts = name.split(".")
            if parts[0] not in PACKAGES:
                continue
            for i in range(1, len(parts) + 1):  # a package's __init__ runs on the way down
                m = module_file(root, ".".join(parts[:i]))
                if m is not None:
                    todo.append(m)
    return {p.relative_to(root) for p in seen}


def _entry(root: Path, cmd: str) -> Path:
    words = cmd.split()
    if "-m" in words:
        f = module_file(root, words[words.index("-m") + 1])
    else:
        f = next((root / w for w in words if w.endswith(".py")), None)
    if f is None:
        raise ValueError(f"can't find the Python entry point in {cmd!r}")
    return f


def check(root: Path = Path(".")) -> dict[str, dict[str, list[str]]]:
    """{stage: {"missing": [files imported, not covered by deps], "unused": [code deps never imported]}}."""
    root = root.resolve()
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    report = {}
    for name, st in stages.items():
        used = imports(root, _entry(root, st["cmd"]))
        deps = [d if isinstance(d, str) else next(iter(d)) for d in st.get("deps", [])]
        code = [d.rstrip("/") for d in deps if d.split("/")[0] in PACKAGES]
        covers = lambda d, f: str(f) == d or str(f).startswith(d + "/")  # noqa: E731
        missing = sorted(
            str(f)
            for f in used
            if not any(covers(d, f) for d in code)
            and not (f.name == "__init__.py" and not (root / f).read_text().strip())
        )
        unused = sorted(d for d in code if not any(covers(d, f) for f in used))
        if missing or unused:
            report[name] = {"missing": missing, "unused": unused}
    return report


def main() -> int:
    report = check()
    for stage, r in report.items():
        if r["missing"]:
            print(f"{stage}: imports but does not list: {', '.join(r['missing'])}")
        if r["unused"]:
            print(f"{stage}: lists but never imports: {', '.join(r['unused'])}")
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main())
