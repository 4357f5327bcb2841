"""Fill the report's Jinja2 template with a run's sources and figures, and print it to PDF with
Chromium. Jinja2 because the layout is then a plain HTML file a student or instructor edits
without touching Python (and it escapes every value); Chromium because its print engine is the
one the page is tested in, and Debian ships it (no Python PDF engine lays out HTML as well)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
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


def find_chromium() -> str | None:
    """$CHROMIUM, or Debian's chromium / chromium-browser / google-chrome on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def print_pdf(html_path: Path, pdf_path: Path, chromium: str, timeout: float = 120) -> None:
    """Print `html_path` to `pdf_path` with headless Chromium (no header/footer: the page has its
    own); the network is off (a proxy that goes nowhere), so the PDF is the page as it is."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--proxy-server=127.0.0.1:9",
            f"--print-to-pdf={pdf_path.resolve()}",
            html_path.resolve().as_uri(),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 or not pdf_path.exists() or pdf_path.stat().st_size == 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{chromium} could not print the PDF: {tail[0]}")
    pdf_path.write_bytes(fixed_dates(pdf_path.read_bytes()))


PDF_DATE = re.compile(rb"/(CreationDate|ModDate) \(D:(\d{14})([^)]*)\)")


def fixed_dates(pdf: bytes) -> bytes:
    """The PDF with its creation and modification dates set to SOURCE_DATE_EPOCH (the
    reproducible-builds convention), or 1980-01-01: the same page prints to the same bytes, so
    the report is remade byte for byte from the same inputs. Each date keeps its length, so the
    file's byte offsets stay valid."""
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(epoch)).encode()

    def fixed(m: re.Match) -> bytes:
        zone = {0: b"", 1: b"Z", 7: b"+00'00'"}.get(len(m.group(3)), b"Z" + b" " * (len(m.group(3)) - 1))
        return b"/%s (D:%s%s)" % (m.group(1), stamp, zone)

    return PDF_DATE.sub(fixed, pdf)
