"""Fill the report's Jinja2 template with a run's sources and figures (src.lab_report.chromium
prints it to PDF). Jinja2 because the layout is then a plain HTML file a student or instructor
edits without touching Python (and it escapes every value); Chromium because its print engine is
the one the page is tested in, and Debian ships it (no Python PDF engine lays out HTML as well)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from src import paths
from src.lab_report.changes import what_changed
from src.lab_report.gather import Figures, Source, fmt_value, read_source, stage_of

# every JSON the report reads, by the name the template uses
SOURCES = {
    name: p.as_posix()
    for name, p in (
        ("eval", paths.EVAL_METRICS),
        ("train", paths.TRAIN_METRICS),
        ("timing", paths.TIMING),
        ("stats", paths.STATS),
        ("theory", paths.THEORY_METRICS),
        ("visualize", paths.VISUALIZE_SUMMARY),
    )
}
SOURCES["params"] = "params.yaml"
FIGURE_FOLDERS = tuple(
    p.as_posix() for p in (paths.SAMPLES_PER_CLASS.parent, paths.PLOTS_THEORY, paths.PLOTS_VISUALIZE)
)


def _sorted_pngs(root: Path, folder: str) -> list[str]:
    # plots/theory's files start with their section number: sort 2 before 11
    def key(p: Path) -> tuple:
        head = p.name.split("_", 1)[0]
        return (int(head) if head.isdigit() else 10**6, p.name)

    return [str(p.relative_to(root)) for p in sorted((root / folder).glob("*.png"), key=key)]


def context(root: Path, numbers: Source, figure_folder: str, now_params: dict) -> dict[str, Any]:
    """Everything the template reads: sources by name, the figures, what changed, and a list of
    what is missing (file, the stage that makes it)."""
    made_by = stage_of(root / "dvc.yaml")
    src = {name: read_source(root, rel, made_by) for name, rel in SOURCES.items()}
    src["numbers"] = numbers
    available = [r for folder in FIGURE_FOLDERS for r in _sorted_pngs(root, folder)]
    available += _sorted_pngs(root, figure_folder)
    figures = Figures(root, available, made_by)
    missing = [{"path": s.path, "why": s.made_by} for s in src.values() if s.data is None]
    train = src["train"].data or {}
    model_name = train.get("model") or (now_params.get("model") or {}).get("name")
    classes = (
        src["stats"].get("classes") or src["visualize"].get("classes") or list(src["eval"].get("per_class_acc") or {})
    )
    return {
        "src": src,
        "fig": figures,
        "missing": missing,
        "changed": what_changed(root, now_params),
        "model_name": model_name,
        "network": numbers.get("network") or {},
        "classes": classes,
        "fmt": fmt_value,
        "best_pt_mb": _size_mb(root / paths.BEST),
    }


def _size_mb(path: Path) -> float | None:
    try:
        return path.stat().st_size / 2**20
    except OSError:
        return None


def render(template: Path, ctx: dict[str, Any]) -> str:
    """The page: `template` (Jinja2, autoescaped, undefined names are errors) filled with `ctx`."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template.parent)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(template.name).render(**ctx)
