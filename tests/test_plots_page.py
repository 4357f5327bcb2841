"""`dvc plots show` / `dvc plots diff` pages render offline in headless Chromium (Debian's, driven by
Playwright): every vega chart draws an SVG or a canvas, every image loads and no request leaves the
machine; the page opens with a table of contents that links every plot, in a student's reading
order (data → training → test results → inside the network → theory). The custom templates in
.dvc/plots/ render: a readable number in every confusion cell, per-class bars on an axis that
starts near the lowest value, each value printed."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from dvc_render.base import Renderer

from src.figures import MIN_CONTRAST, contrast
from tests.conftest import REPO, sh

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium here: install Debian's `chromium` package (.ci/run does) to run the offline rendering test",
)
COUNTS, RECALL, PER_CLASS = (
    "Confusion matrix (test; rows true, columns predicted)",
    "Confusion matrix, row-normalised = recall (test)",
    "Per-class test accuracy",
)
SECTIONS = ["1. The data", "2. Training", "3. Test results", "4. Inside the network", "5. Theory"]
TEMPLATES = REPO / ".dvc" / "plots"

# Before any page script: keep each vega view vegaEmbed() makes, to read its scenegraph afterwards.
KEEP_VIEWS = """
window.__views = {};
let kept;
Object.defineProperty(window, 'vegaEmbed', {configurable: true, get: () => kept, set(f) {
  kept = Object.assign((el, spec, opt) => f(el, spec, opt).then((r) => { window.__views[el] = r.view; return r; }), f);
}});
"""
# What the page shows once drawn: charts, images, the contents, each chart's text marks (with the
# fill of the rect under each, if any) and its x domain.
PROBE = """() => {
  const cells = (view) => {
    const out = [];
    const walk = (mark) => { for (const it of mark.items || []) {
      const marks = it.items || [];
      const rects = marks.filter((m) => m.marktype === 'rect' && m.role === 'mark').flatMap((m) => m.items);
      for (const m of marks.filter((m) => m.marktype === 'text' && m.role === 'mark')) for (const t of m.items) {
        const r = rects.find((r) => t.x >= r.x && t.x < r.x + r.width && t.y >= r.y && t.y < r.y + r.height);
        out.push([t.text, t.fill, r ? r.fill : null]);
      }
      marks.forEach(walk);
    } };
    walk(view.scenegraph().root);
    return out;
  };
  const x = (view) => { try { return view.scale('x').domain(); } catch (e) { return null; } };
  const charts = [...document.querySelectorAll('.vega-embed')], imgs = [...document.images];
  const nav = document.getElementById('contents'), first = document.querySelector('#plots > section');
  return {charts: charts.length, drawn: charts.filter((d) => d.querySelector('svg, canvas')).length,
          images: imgs.length, loaded: imgs.filter((i) => i.complete && i.naturalWidth > 0).length,
          vega: typeof vegaEmbed, links: nav ? [...nav.querySelectorAll('a')].map((a) => a.getAttribute('href')) : [],
          sections: [...document.querySelectorAll('#plots > section > h2')].map((h) => h.firstChild.textContent.trim()),
          plots: [...document.querySelectorAll('#plots > section > div[id]')].map((d) => d.id),
          loose: document.querySelectorAll('#plots > div').length,
          wide: imgs.filter((i) => i.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
                    .map((i) => i.getAttribute('src')),
          contents_first: !!(nav && first && nav.compareDocumentPosition(first) & Node.DOCUMENT_POSITION_FOLLOWING),
          views: Object.fromEntries(Object.entries(window.__views).map(
            ([el, v]) => [el.slice(1), {cells: cells(v), x: x(v)}]))};
}"""


def render(page: Path, charts: int) -> dict:
    """Open `page` in headless Chromium, every request that is not a local file refused and
    recorded; return what the page shows once its `charts` vega charts are drawn."""
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    local = ("file:", "data:", "blob:", "about:")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--allow-file-access-from-files",
                "--host-resolver-rules=MAP * ~NOTFOUND",
            ],
        )
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        ctx.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
        ctx.route("**/*", lambda route: route.continue_() if route.request.url.startswith(local) else route.abort())
        ctx.add_init_script(KEEP_VIEWS)
        pg = ctx.new_page()
        pg.goto(page.as_uri(), wait_until="load")
        pg.wait_for_function("n => Object.keys(window.__views).length >= n", arg=charts, timeout=60_000)
        pg.wait_for_timeout(500)  # the last view's first render
        res = pg.evaluate(PROBE)
        browser.close()
    res["outside"] = sorted(set(outside))
    return res


def _check_page(folder: Path, min_charts: int, min_images: int) -> dict:
    page = folder / "index.html"
    html = page.read_text()
    assert not re.search(r"<script[^>]+src=\"https?://", html), "the page loads scripts from the network"
    calls = html.count("vegaEmbed('#")  # one per vega chart DVC put on the page
    assert calls >= min_charts
    res = render(page, calls)
    assert res["outside"] == [], f"requests left the machine: {res['outside']}"
    assert res["vega"] == "function"
    assert res["charts"] == calls and res["drawn"] == calls, res
    assert res["images"] >= min_images and res["loaded"] == res["images"], res
    assert res["wide"] == [], res["wide"]  # every image within the 1400-pixel window (a diff's two side by side)
    # the contents: first on the page, one link per section and per plot, every plot in a section
    plots = re.findall(r'<div\s+id\s*=\s*"([^"]+)"', html[html.rfind('<main id="plots">') :])
    assert res["contents_first"], "no table of contents before the plots"
    assert res["loose"] == 0, "plots left outside the sections"
    assert res["sections"] == SECTIONS, res["sections"]  # no "Other plots": each plot has its section
    assert sorted(res["plots"]) == sorted(plots) and len(plots) == calls + min_images
    assert set(res["links"]) == {f"#section-{i}" for i in range(1, 6)} | {f"#{p}" for p in plots}
    order = [
        next(i for i, p in enumerate(res["plots"]) if key in p)
        for key in ("samples_per_class", "Accuracy", "Confusion_matrix", "filters_first_layer", "theory_1_relu")
    ]
    assert order == sorted(order), res["plots"]  # data → training → test → inside → theory
    return res


def _rgb(colour: str) -> tuple[float, ...]:
    """A vega colour ("rgb(8, 48, 107)", "#08306b" or a name) as matplotlib reads it."""
    m = re.fullmatch(r"rgba?\(([^)]*)\)", colour.replace(" ", ""))
    return tuple(float(v) / 255 for v in m.group(1).split(",")[:3]) if m else colour


def _check_charts(res: dict, repo: Path) -> None:
    """The confusion charts print every cell's number readably; the bars print theirs and start near the lowest."""
    with open(repo / "plots/eval/predictions.csv") as f:
        pairs = Counter((r["actual"], r["predicted"]) for r in csv.DictReader(f))
    with open(repo / "plots/eval/per_class.csv") as f:
        per_class = {r["class"]: float(r["accuracy"]) for r in csv.DictReader(f)}
    views = {name: res["views"][Renderer.remove_special_chars(name)] for name in (COUNTS, RECALL, PER_CLASS)}
    k = len(per_class)
    for name in (COUNTS, RECALL):
        cells = views[name]["cells"]
        assert len(cells) == k * k and all(text not in (None, "") for text, _, _ in cells), (name, cells)
        for text, fg, bg in cells:
            assert bg is not None and contrast(_rgb(fg), _rgb(bg)) >= MIN_CONTRAST, (name, text, fg, bg)
    counts = sorted(int(t) for t, _, _ in views[COUNTS]["cells"])
    assert counts == sorted([*pairs.values(), *[0] * (k * k - len(pairs))])
    assert all(re.fullmatch(r"[01]\.\d\d", t) for t, _, _ in views[RECALL]["cells"])
    bars = views[PER_CLASS]
    assert sorted(t for t, _, _ in bars["cells"]) == sorted(f"{v:.3f}" for v in per_class.values())
    lo = min(per_class.values())
    assert lo - 0.1 < bars["x"][0] <= lo, bars["x"]  # near the lowest bar, not 0


def _plots_repo(dest: Path) -> Path:
    """A git + DVC repo with this project's dvc.yaml, plot templates and page, and the plot files
    as committed (no pipeline run: `dvc plots show` reads the workspace)."""
    dest.mkdir(parents=True)
    for rel in ("dvc.yaml", "templates", "plots", "dvclive"):
        (shutil.copytree if (REPO / rel).is_dir() else shutil.copy)(REPO / rel, dest / rel)
    sh(dest, "git", "init", "-q", "-b", "main")
    sh(dest, "dvc", "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    shutil.copytree(TEMPLATES, dest / ".dvc" / "plots")
    sh(dest, "git", "add", "-A")
    sh(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "plots")
    return dest


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    return _plots_repo(tmp_path_factory.mktemp("plots") / "lab")


# ----------------------------------------------------------------------------- the templates, no browser


def test_the_custom_templates_render_with_every_anchor_filled(committed):
    out = json.loads(sh(committed, "dvc", "plots", "show", "--json").stdout)["data"]
    for name, template in (
        (COUNTS, "confusion_counts"),
        (RECALL, "confusion_normalized_values"),
        (PER_CLASS, "bar_horizontal_values"),
    ):
        raw = (TEMPLATES / f"{template}.json").read_text()
        for anchor in ("DATA", "TITLE", "X", "Y", "X_LABEL", "Y_LABEL", "PLOT_WIDTH", "PLOT_HEIGHT"):
            assert f"<DVC_METRIC_{anchor}>" in raw, (template, anchor)
        content = out[name][0]["content"]
        text = json.dumps(content)
        assert "<DVC_METRIC_" not in text and content["data"]["values"], name  # DVC filled them all
        layers = (content.get("spec") or content)["layer"]
        assert any(layer["mark"]["type"] == "text" and "text" in layer["encoding"] for layer in layers), name
    assert "<DVC_METRIC_COLOR>" in (TEMPLATES / "bar_horizontal_values.json").read_text()
    bars = out[PER_CLASS][0]["content"]["encoding"]["x"]
    assert bars["scale"]["zero"] is False and bars["stack"] is None  # a stacked bar would start at 0 again


@pytest.mark.parametrize("template", ["confusion_counts", "confusion_normalized_values"])
def test_the_confusion_numbers_are_readable_on_every_shade(template):
    """The text turns white above the template's threshold; on the template's colour ramp (linear
    in RGB) that gives WCAG contrast >= 4.5 on every shade, the lightest to the darkest."""
    spec = json.loads((TEMPLATES / f"{template}.json").read_text())["spec"]
    rect, text = spec["layer"]
    scale = rect["encoding"]["color"]["scale"]
    assert scale["interpolate"] == "rgb" and scale.get("nice") is not True
    lo, hi = (np.array([int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)]) for c in scale["range"])
    rule = text["encoding"]["color"]
    threshold = float(re.fullmatch(r"datum\.\w+ > ([\d.]+)", rule["condition"]["test"]).group(1))
    for t in np.linspace(0, 1, 401):
        fg = rule["condition"]["value"] if t > threshold else rule["value"]
        assert contrast(fg, lo + (hi - lo) * t) >= MIN_CONTRAST, (t, fg)


def test_confusion_charts_of_runs_with_different_classes_show_each_runs_own(tmp_path):
    """An instructor's `dvc plots diff` of two students' runs on different class sets and test sizes:
    each panel is that run's own k×k matrix (the imputed union of classes showed NaN rows and 0
    columns of the other run's classes; a class no run predicted had no column), and every count is
    readable on its cell (the text's white/black followed each run's own largest count, the shared
    colour scale both runs')."""
    import vl_convert as vlc

    repo = _plots_repo(tmp_path / "lab")
    preds = repo / "plots" / "eval" / "predictions.csv"
    mine = sorted({row["actual"] for row in csv.DictReader(preds.open())})
    never = mine[0]  # a class neither run predicts (a tiny run's model predicts one class for all)

    def rewrite(rows: list[dict]) -> None:
        with preds.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({**r, "predicted": mine[1] if r["predicted"] == never else r["predicted"]} for r in rows)

    rows = list(csv.DictReader(preds.open()))
    commit = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam"]
    rewrite(rows)
    sh(repo, *commit, "the base run")
    rewrite(rows[::10])  # a tenth of the test images
    preds.write_text(preds.read_text().replace(mine[-1], "cat"))  # and its last class renamed
    sh(repo, *commit, "another class set")
    out = json.loads(sh(repo, "dvc", "plots", "diff", "--json", "HEAD~1", "HEAD").stdout)["data"]
    k = len(mine)
    for name in (COUNTS, RECALL):
        svg = vlc.vegalite_to_svg(out[name][0]["content"])
        texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
        assert "NaN" not in texts and texts.count("cat") == 2 and texts.count(mine[-1]) == 2, name  # own panel, x and y
        rects = re.findall(r'<g class="mark-rect role-mark[^"]*"[^>]*>(.*?)</g>', svg, re.S)
        cells = re.findall(r'<g class="mark-text role-mark[^"]*"[^>]*>(.*?)</g>', svg, re.S)
        assert [len(re.findall(r"<text", c)) for c in cells] == [k * k, k * k], name
        for rect, cell in zip(rects, cells):
            bgs = re.findall(r'fill="([^"]+)"', rect)
            fgs = re.findall(r'<text[^>]*fill="([^"]+)"', cell)
            assert len(bgs) == len(fgs) == k * k, name
            for fg, bg in zip(fgs, bgs):
                assert contrast(_rgb(fg), _rgb(bg)) >= MIN_CONTRAST, (name, fg, bg)


def test_the_page_template_is_what_its_build_script_writes():
    """templates/plots_offline.html is built, not hand-edited: its contents script and sections
    come from tools/build_plots_template.py (rebuild with --reuse, no network)."""
    from tools.build_plots_template import OUT, inlined, page
    from tools.build_plots_template import SECTIONS as ORDER

    text = OUT.read_text()
    assert text == page(*inlined(text)), "run `python tools/build_plots_template.py --reuse`"
    assert [f"{i}. {title}" for i, (title, _) in enumerate(ORDER, 1)] == SECTIONS


# ----------------------------------------------------------------------------- the pages in Chromium


@needs_chromium
def test_the_page_of_the_committed_plots_has_contents_and_readable_charts(committed, tmp_path):
    sh(committed, "dvc", "plots", "show", "-o", str(tmp_path / "show"))
    res = _check_page(tmp_path / "show", min_charts=6, min_images=len(list((committed / "plots").rglob("*.png"))))
    _check_charts(res, committed)


@needs_chromium
def test_plots_show_and_diff_render_offline(repo, tmp_path):
    sh(repo, "dvc", "plots", "show", "-o", str(tmp_path / "show"))
    # 6 vega plots (accuracy, loss, lr, 2 confusion, per-class) and every PNG of stats, visualize, theory
    n_png = len(list((repo / "plots").rglob("*.png")))
    _check_charts(_check_page(tmp_path / "show", min_charts=6, min_images=n_png), repo)
    sh(repo, "dvc", "plots", "diff", "HEAD", "-o", str(tmp_path / "diff"))
    _check_page(tmp_path / "diff", min_charts=6, min_images=n_png)


def test_dvc_charts_say_what_the_pngs_say(repo):
    """The DVC charts agree with the PNGs: whole epochs 1..N, a dash per split, the lr of every
    step, confusion rows = true class, and the normalised confusion divides by the true class."""
    specs = {
        name: entries[0]["content"]
        for name, entries in json.loads(sh(repo, "dvc", "plots", "show", "--json").stdout)["data"].items()
        if entries and "content" in entries[0]
    }
    epochs = json.loads((repo / "metrics/train.json").read_text())["epochs"]
    acc = specs["Accuracy (train vs validation)"]
    rows = acc["data"]["values"]
    assert sorted({int(r["step"]) for r in rows}) == list(range(1, epochs + 1))
    assert len({r["filename"] for r in rows}) == 2  # train and validation
    assert acc["encoding"]["color"]["field"] == "rev"  # DVC's colour anchor: a colour per revision
    dash = acc["layer"][0]["encoding"]["strokeDash"]  # and a dash per split, on the lines
    assert dash["field"] == "split" and dash["scale"]["domain"] == ["train", "validation"]
    assert acc["encoding"]["x"]["axis"]["format"] == "d"
    lr = specs["Learning rate (every step)"]["data"]["values"]
    assert len(lr) == json.loads((repo / "metrics/train.json").read_text())["steps"]
    for name in (COUNTS, RECALL):
        enc = specs[name]["spec"]["encoding"]
        assert (enc["x"]["field"], enc["y"]["field"]) == ("predicted", "actual"), name
    norm = specs[RECALL]["transform"]  # before the facet: one pass over both revisions
    # per revision and true class (DVC's own template sums over every revision in `dvc plots diff`)
    assert {"joinaggregate": [{"op": "sum", "field": "xy_count", "as": "sum_y"}], "groupby": ["rev", "actual"]} in norm


@needs_chromium
def test_a_diff_of_three_revisions_keeps_every_image_in_the_window(tmp_path):
    """`dvc plots diff main a b`: the page set each revision's PNG at half the width on one line that
    can't scroll (DVC's nowrap, overflow hidden), so the third revision's images lay outside it."""
    from dvc_render import ImageRenderer
    from PIL import Image

    Image.new("RGB", (1200, 400), "white").save(tmp_path / "wide.png")
    points = [{"rev": rev, "src": "wide.png"} for rev in ("main", "epochs-8", "cat-dog")]
    div = ImageRenderer(points, "plots/visualize/gradcam.png").generate_html()
    page = tmp_path / "index.html"
    page.write_text(
        (REPO / "templates/plots_offline.html").read_text().replace("{refresh_tag}", "").replace("{plot_divs}", div)
    )
    res = render(page, 0)
    assert res["images"] == 3 and res["loaded"] == 3, res
    assert res["wide"] == [], res["wide"]
