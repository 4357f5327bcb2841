"""Everything the report shows, read from the stages' own files, each number tagged with the file
and key it came from (so the page can be checked against its sources), each figure embedded as a
data URI. A file that is not there is named on the page with the stage that makes it."""

from __future__ import annotations

import base64
import fnmatch
import html
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from markupsafe import Markup

from src.errors import DataError
from src.io import read_json
from src.params import yaml_error


def lookup(data: Any, key: str, default: Any = None) -> Any:
    """The value at dotted `key` ("a.b.0.c": list items by index), or `default` where there is none."""
    try:
        for part in key.split("."):
            data = data[int(part)] if isinstance(data, list) else data[part]
    except (KeyError, IndexError, TypeError, ValueError):
        return default
    return data


@dataclass
class Missing:
    """Where a file was needed but absent: renders as a dash (the page lists it once above)."""

    path: str

    def __html__(self) -> str:
        return f'<span class="missing" title="{html.escape(self.path)} is missing">—</span>'

    def __str__(self) -> str:
        return "—"

    def __bool__(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Missing:
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __getitem__(self, key: Any) -> Missing:
        return self

    def __iter__(self):
        return iter(())


def fmt_value(v: Any, fmt: str) -> str:
    """A value as the page prints it: `%` a percentage with two decimals, `int` with thousands
    separators, a format spec otherwise (`.4f`), `str` as it is (a boolean as YAML writes it)."""
    if fmt == "%":
        return f"{100 * v:.2f} %"
    if fmt == "int":
        return f"{int(v):,}"
    if fmt == "str":
        return ("true" if v else "false") if isinstance(v, bool) else str(v)  # as params.yaml spells it
    return format(v, fmt)


@dataclass
class Source:
    """One input file (JSON, YAML, or numbers computed by the report itself)."""

    path: str
    data: Any
    made_by: str = ""

    def get(self, key: str, default: Any = None) -> Any:
        return lookup(self.data, key, default)

    def num(self, key: str, fmt: str = ".4f") -> Any:
        """`key`'s value as a tagged span: data-src/data-key name where it came from, data-value
        holds it in full (JSON), the text is `fmt_value(value, fmt)`."""
        if self.data is None:
            return Missing(self.path)
        v = self.get(key)
        if v is None:
            return Missing(f"{self.path}:{key}")
        return Markup('<span class="num" data-src="{}" data-key="{}" data-value="{}" data-fmt="{}">{}</span>').format(
            self.path, key, json.dumps(v), fmt, fmt_value(v, fmt)
        )


# The printed page (templates/lab_report.html.j2's @page and print rules): A4 with 13 mm side
# margins, a picture at most 245 mm tall (room for its caption). A browser shows a PNG at 96 pixels
# an inch and shrinks a wider or taller one to fit, so no picture is sliced across two pages.
PAGE_IN = ((210 - 2 * 13) / 25.4, 245 / 25.4)  # (width, height) a picture may take


def printed_scale(width_in: float, height_in: float, dpi: float) -> float:
    """Printed size / drawn size of a matplotlib figure of `width_in` × `height_in` saved at `dpi`."""
    shown_w, shown_h = width_in * dpi / 96, height_in * dpi / 96
    return dpi / 96 * min(1.0, PAGE_IN[0] / shown_w, PAGE_IN[1] / shown_h)


@dataclass
class Figures:
    """The PNGs the page can show; `get`/`glob` embed them and remember which were shown, so the
    page's last section can list every figure no section placed."""

    root: Path
    available: list[str]
    made_by: Callable[[str], str]
    shown: list[str] = field(default_factory=list)

    def _embed(self, rel: str, caption: str) -> Markup:
        self.shown.append(rel)
        data = base64.b64encode((self.root / rel).read_bytes()).decode()
        return Markup(
            '<figure data-file="{}"><img src="data:image/png;base64,{}" alt="{}"><figcaption>{} '
            "<code>{}</code></figcaption></figure>"
        ).format(rel, Markup(data), caption or rel, caption, rel)

    def _not_drawn(self, rel: str) -> Markup:
        why = self.made_by(rel)
        if (self.root / rel).parent.is_dir():  # the stage ran: it had nothing to draw, or params turned it off
            why = (
                why.split(":")[0].replace("made by", "not drawn by")
                + " in this run (nothing to show, or off in params.yaml)"
            )
        return Markup('<p class="missing-figure">Not drawn: <code>{}</code> — {}.</p>').format(rel, why)

    def get(self, rel: str, caption: str = "") -> Markup:
        return self._embed(rel, caption) if rel in self.available else self._not_drawn(rel)

    def glob(self, pattern: str, caption: str = "") -> list[Markup]:
        found = [r for r in self.available if fnmatch.fnmatch(r, pattern)]
        return [self._embed(r, caption) for r in found] if found else [self._not_drawn(pattern)]

    def rest(self) -> list[Markup]:
        """Every available figure not shown yet (so a new figure is never left out of the report)."""
        return [self._embed(r, "") for r in self.available if r not in self.shown]


def stage_of(dvc_yaml: Path) -> Callable[[str], str]:
    """A function naming the dvc.yaml stage whose outs hold a path, as the command that makes it."""
    try:
        stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        stages = {}
    outs = [
        (next(iter(o)) if isinstance(o, dict) else o, name)
        for name, s in stages.items()
        for kind in ("outs", "metrics", "plots")
        for o in s.get(kind, [])
    ]

    def made_by(rel: str) -> str:
        for out, name in outs:
            if rel == out or rel.startswith(out.rstrip("/") + "/"):
                return f"made by the {name} stage: run `dvc repro {name}`"
        return "no stage of dvc.yaml makes it"

    return made_by


def read_source(root: Path, rel: str, made_by: Callable[[str], str]) -> Source:
    """The file as a Source; a missing or unreadable one has no data and says why."""
    path = root / rel
    try:
        text = path.read_text()
    except OSError:
        return Source(rel, None, made_by(rel))
    try:
        data = yaml.safe_load(text) if rel.endswith((".yaml", ".yml")) else json.loads(text)
    except yaml.YAMLError as exc:
        return Source(rel, None, f"unreadable (not valid YAML: {yaml_error(exc)}); {made_by(rel)}")
    except ValueError as exc:
        return Source(rel, None, f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]}); {made_by(rel)}")
    return Source(rel, data if isinstance(data, (dict, list)) else None, made_by(rel))


def git_show(root: Path, rev: str, rel: str) -> str | None:
    """The text of `rel` (a path under `root`) at `rev`, or None (not a git repo, no such commit or file)."""
    try:  # "./": relative to root, which may be a folder of the repository (`dvc init --subdir`), not its top
        r = subprocess.run(["git", "show", f"{rev}:./{rel}"], cwd=root, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def git_short(root: Path, rev: str) -> str | None:
    """The short hash of `rev`, or None."""
    try:
        r = subprocess.run(["git", "rev-parse", "--short", rev], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None


def read_json_or_none(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, DataError):
        return None
