"""The report stage's page: the theory additions drawn (report/figures, report/numbers.json) and
report/lab_report.html written. Imported by stages/report.py once Chromium is starting, since this
module's imports (torch, matplotlib) are most of the stage's start-up."""

from pathlib import Path

import yaml

from src import paths
from src.data.cifar import Subset
from src.errors import CheckpointError, DataError
from src.figures import run_steps
from src.figures.background import figures_saved
from src.io import atomic_dir, read_json, write_json, write_text
from src.lab_report import build, render
from src.lab_report.gather import Source
from src.params import Params, check_index
from src.training.checkpoints import load_trained
from stages._parallel import cpu_threads, use_cpu


def write_page(p: Params) -> int:
    """Write report/lab_report.html (and the additions it shows); the number of figures on it."""
    use_cpu(p)
    numbers = additions(p)
    ctx = render.context(Path("."), numbers, str(paths.REPORT_FIGURES), yaml.safe_load(Path("params.yaml").read_text()))
    ctx["recipe"] = (p.with_gpu_recipe() if ctx["src"]["train"].get("recipe") == "gpu" else p).model_dump()
    write_text(paths.REPORT_HTML, render.render(paths.REPORT_TEMPLATE, ctx))
    return len(ctx["fig"].shown)


def additions(p: Params) -> Source:
    """The theory additions (needs the subset and the trained model; named on the page if absent)."""
    try:
        sub = Subset.load(paths.SUBSET)
        model, ck = load_trained(paths.BEST, sub.classes)
    except (DataError, CheckpointError) as exc:
        print(f"report: without the theory additions: {exc}")
        with atomic_dir(paths.REPORT_FIGURES):
            pass  # no figures of another run on the page
        return Source(str(paths.REPORT_NUMBERS), None, f"made by the report stage from {paths.SUBSET} and {paths.BEST}")
    r = p.report
    index = check_index("report.image_index", r.image_index, len(sub.test_x), "test images")
    step = build.theory_additions(model.eval(), sub, ck["mean"], ck["std"], index, r.bn_images, r.mixup_alpha, r.seed)
    with atomic_dir(paths.REPORT_FIGURES) as figures:
        with figures_saved(figures, r.dpi, cpu_threads(p)[0]) as save:
            numbers = run_steps([step], save)
        write_json(paths.REPORT_NUMBERS, numbers)
    return Source(str(paths.REPORT_NUMBERS), read_json(paths.REPORT_NUMBERS))
