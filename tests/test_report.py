"""The report stage on a real (tiny) pipeline run: every number on the page equals the file it came
from, every figure the stages drew is on it, the page needs nothing from the network, the PDF holds
the result, an experiment lists exactly what changed, and a missing input is named, not a crash.

    REPORT_ROOT=. SCREENSHOTS=docs python -m pytest tests/test_report.py -k browser   # the README's pictures
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from src.lab_report import chromium, render
from src.lab_report.gather import Source
from src.params import CIFAR10_CLASSES, load_params
from tests.conftest import REPO, sh

CHROMIUM = chromium.find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here: install Debian's `chromium` (.ci/run does)"
)


class Page(HTMLParser):
    """The tagged numbers (data-src, data-key, data-value, data-fmt, text), embedded figures and tables."""

    def __init__(self, text: str):
        super().__init__()
        self.nums: list[dict] = []
        self.figures: dict[str, bytes] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._num: dict | None = None
        self._fig: str | None = None
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "span" and a.get("class") == "num":
            self._num = {**{k[5:]: v for k, v in a.items() if k.startswith("data-")}, "text": ""}
        elif tag == "figure":
            self._fig = a["data-file"]
        elif tag == "img" and self._fig:
            self.figures[self._fig] = base64.b64decode(a["src"].split(",", 1)[1])
        elif tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "span" and self._num is not None:
            self.nums.append(self._num)
            self._num = None
        elif tag == "figure":
            self._fig = None
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._num is not None:
            self._num["text"] += data
        if self._cell is not None:
            self._cell.append(data)


def value_at(root: Path, rel: str, key: str):
    text = (root / rel).read_text()
    data = yaml.safe_load(text) if rel.endswith(".yaml") else json.loads(text)
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def shown(v, fmt: str) -> str:
    if fmt == "%":
        return f"{100 * v:.2f} %"
    if fmt == "int":
        return f"{v:,}"
    if fmt == "str":
        return json.dumps(v) if isinstance(v, bool) else str(v)  # a boolean as YAML and JSON spell it
    return format(v, fmt)


@pytest.fixture(scope="module")
def page(repo) -> Page:
    return Page((repo / "report/lab_report.html").read_text())


def test_every_number_on_the_page_equals_its_file(repo, page):
    assert len(page.nums) > 150
    train = json.loads((repo / "metrics/train.json").read_text())
    assert value_at(repo, "report/numbers.json", "network.total_params") == train["params"]  # the trained net
    for n in page.nums:
        v = value_at(repo, n["src"], n["key"])
        assert json.loads(n["value"]) == v, n
        assert n["text"] == shown(v, n["fmt"]), n


def test_the_results_a_marker_looks_for_are_all_there(repo, page):
    tagged = {(n["src"], n["key"]) for n in page.nums}
    ev = json.loads((repo / "metrics/eval.json").read_text())
    vz = json.loads((repo / "plots/visualize.json").read_text())
    want = {
        ("metrics/eval.json", "test_acc"),
        ("metrics/eval.json", "macro_f1"),
        ("metrics/train.json", "params"),
        ("report/numbers.json", "network.total_params"),
    }
    want |= {("metrics/eval.json", f"per_class_acc.{c}") for c in ev["per_class_acc"]}
    want |= {
        ("plots/visualize.json", f"confusion.matrix.{i}.{j}")
        for i, row in enumerate(vz["confusion"]["matrix"])
        for j in range(len(row))
    }
    want |= {("metrics/eval.json", f"most_confused.{k}.{key}") for k, m in enumerate(ev["most_confused"]) for key in m}
    want |= {("metrics/stats.json", f"normalize_{s}.{c}") for s in ("mean", "std") for c in range(3)}
    want |= {
        ("report/numbers.json", k)
        for k in (
            "dense_vs_conv.conv_params",
            "dense_vs_conv.dense_same_outputs_params",
            "neuron.sum",
            "neuron.torch",
            "batchnorm.before_mean",
            "batchnorm.after_std",
            "mixup.lam",
        )
    }
    assert want <= tagged, sorted(want - tagged)
    counts = page.tables["confusion-counts"]
    assert [int(c.replace(",", "")) for c in counts[1][1:]] == vz["confusion"]["matrix"][0]


def test_the_recipe_and_the_scoring_are_stated_as_they_ran(repo, page):
    """The optimizer row gives Muon's own peak lr (the conv filters': nearly every weight), not only
    the lr of the rest; the test line says TTA scored only the least sure share of the images."""
    p = yaml.safe_load((repo / "params.yaml").read_text())
    optimizer = {row[0]: row[1] for row in page.tables["recipe"]}["optimizer"]
    assert p["train"]["optimizer"] == "muon" and optimizer.startswith(f"muon, lr {p['train']['lr']} with")
    assert f"(the conv filters, which Muon updates, peak at {p['train']['muon_lr']} instead)" in optimizer
    assert p["evaluate"]["tta_fraction"] < 1
    assert ("metrics/eval.json", "tta_fraction") in {(n["src"], n["key"]) for n in page.nums}
    tta_flip = [n for n in page.nums if (n["src"], n["key"]) == ("metrics/eval.json", "tta_flip")]
    assert tta_flip and all(n["text"] in ("true", "false") for n in tta_flip)  # as params.yaml spells it, not True


def test_the_theory_names_this_runs_own_network_where_it_differs_from_the_labs(repo):
    """Section IV says what feeds the neuron's layer (not pixels, past the first layer), IX which
    global pooling this run's network ends with (the lab's teaches the average; fast_cnn takes the max)."""
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", (repo / "report/lab_report.html").read_text()))
    numbers = json.loads((repo / "report/numbers.json").read_text())
    layers = numbers["network"]["layers"]
    at = [row["layer"] for row in layers].index(numbers["neuron"]["layer"])
    before = ", ".join(f"{row['layer']} ({row['type']})" for row in layers[:at])
    assert at > 0 and f"Its inputs x are not pixels but what the layers before it give: {before}." in text
    pool = next(row for row in layers if row["type"].startswith("Adaptive"))
    assert pool["type"] == "AdaptiveMaxPool2d"  # fast_cnn, the default
    assert f"This run's network ends with global max pooling ({pool['layer']}: each map gives its largest value" in text


def test_what_excites_each_layer_comes_in_the_networks_order(repo):
    """By file name the first layer ("whiten") came after group 3; the visualize stage records the layers in order."""
    layers = list(json.loads((repo / "plots/visualize.json").read_text())["top_patches"])
    html = (repo / "report/lab_report.html").read_text()
    shown = list(dict.fromkeys(re.findall(r"plots/visualize/top_patches_(\w+)\.png", html)))
    assert len(layers) >= 4 and shown == [name.replace(".", "_") for name in layers]
    assert shown[0] == "whiten" and shown[1:] == sorted(shown[1:])  # the input side first: fast_cnn's groups 1, 2, 3


def test_every_figure_the_stages_drew_is_embedded_as_it_is(repo, page):
    # the committed run's figures (an experiment that ran since may have left other classes' PNGs)
    committed = sh(repo, "git", "ls-files", "plots").stdout.split()
    drawn = sorted(
        [p for p in committed if p.endswith(".png")]
        + [str(p.relative_to(repo)) for p in (repo / "report/figures").glob("*.png")]
    )
    assert len(drawn) >= 30
    assert sorted(page.figures) == drawn
    for rel, data in page.figures.items():
        assert data == (repo / rel).read_bytes(), rel
    html = (repo / "report/lab_report.html").read_text()
    assert "More figures of this run" not in html  # every figure has its section
    assert "Not in this report yet" not in html
    for name in re.findall(r"Not drawn: <code>([^<]+)</code> — not drawn by the (\w+) stage in this run", html):
        assert name[0] not in committed  # a figure the run chose not to draw (no mistakes to show) is named


def test_the_lab_order_and_the_students_own_space(repo):
    html = (repo / "report/lab_report.html").read_text()
    order = [
        "1. Aim",
        "I. Why not a fully connected",
        "II. Images as inputs",
        "III. Normalisation",
        "IV. A neuron",
        "V. Activation",
        "VI. Convolution",
        "VII. Feature maps",
        "VIII. Stride and padding",
        "IX. Pooling",
        "X. Flattening",
        "XI. Batch Normalization",
        "XII. The architecture",
        "3. Code and Result",
        "The network",
        "Training",
        "Predictions and mistakes",  # the notebook's order: sample predictions, per-class, confusion
        "Test results",
        "Confusion matrix",
        "Inside the network",
        "Summary",
    ]
    body = html[html.index("</nav>") :]
    at = [body.index(f">{h}") for h in order]
    assert at == sorted(at)
    assert html.count('class="yours"') == html.count("<h3") + 1  # every section, plus the aim
    assert html.count('<div class="yours-space" contenteditable="true"></div>') == html.count('class="yours"')
    assert "What changed" not in html  # the committed run is no experiment
    assert "http://" not in html.replace("http://127.0.0.1", "") and "https://" not in html


@needs_chromium
def test_the_pdf_has_pages_and_the_result(repo):
    from pypdf import PdfReader

    pdf = PdfReader(repo / "report/lab_report.pdf")
    text = "".join(p.extract_text() for p in pdf.pages)
    acc = json.loads((repo / "metrics/eval.json").read_text())["test_acc"]
    assert len(pdf.pages) >= 10
    assert f"Test accuracy : {100 * acc:.2f} %" in " ".join(text.split())
    assert "Your observations" in text


@needs_chromium
def test_the_same_page_prints_to_the_same_pdf(tmp_path):
    from pypdf import PdfReader

    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html><html><head><title>t</title></head><body><h1>Same bytes</h1></body></html>")
    chromium.print_pdf(page, tmp_path / "a.pdf", CHROMIUM)
    time.sleep(1.1)  # Chromium dates a PDF to the second
    chromium.print_pdf(page, tmp_path / "b.pdf", CHROMIUM)
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert PdfReader(tmp_path / "a.pdf").metadata.creation_date.year == 1980
    assert "Same bytes" in PdfReader(tmp_path / "a.pdf").pages[0].extract_text()


def test_structure_ids_are_counted_from_one_in_order_and_length():
    pdf = b"/ID (node00000091)>> /Limits [(node00000091) (node00000102)] /CreationDate (D:20261207034830+00'00')"
    same_page_later = pdf.replace(b"00000091", b"00000090").replace(b"00000102", b"00000101")
    fixed = chromium.reproducible(pdf)
    assert fixed == chromium.reproducible(same_page_later)
    assert fixed.startswith(b"/ID (node00000001)>> /Limits [(node00000001) (node00000012)] /CreationDate (D:1980")
    assert chromium.reproducible(b"no tags") == b"no tags"


@needs_chromium
def test_the_pipe_prints_what_print_to_pdf_prints_and_says_what_failed(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>t</title><style>@page { size: A5 } body { background: #fdd }</style>"
        "</head><body><h1>Background and page size</h1></body></html>"
    )
    chromium.OneShot(CHROMIUM, 120).print_pdf(page, tmp_path / "cli.pdf")
    with chromium.started(CHROMIUM) as browser:  # one browser, two pages: the second gets a fresh tab
        browser.print_pdf(page, tmp_path / "pipe.pdf")
        browser.print_pdf(page, tmp_path / "again.pdf")
        with pytest.raises(RuntimeError, match="could not open .*missing.html: net::ERR_FILE_NOT_FOUND"):
            browser.print_pdf(tmp_path / "missing.html", tmp_path / "x.pdf")
    assert (tmp_path / "pipe.pdf").read_bytes() == (tmp_path / "cli.pdf").read_bytes()
    assert (tmp_path / "again.pdf").read_bytes() == (tmp_path / "cli.pdf").read_bytes()
    assert not (tmp_path / "x.pdf").exists()
    with pytest.raises(RuntimeError, match="could not print the PDF: .*No such file"):
        chromium.print_pdf(page, tmp_path / "y.pdf", str(tmp_path / "no-chromium"))


@needs_chromium
def test_browser_renders_it_offline_with_every_figure(repo):
    from playwright.sync_api import sync_playwright

    root = Path(os.environ.get("REPORT_ROOT", repo)).resolve()
    url = (root / "report/lab_report.html").as_uri()
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        ctx = browser.new_context(viewport={"width": 1100, "height": 1300})

        def only_local(route):
            if route.request.url == url or route.request.url.startswith("data:"):
                return route.continue_()
            outside.append(route.request.url)
            return route.abort()

        ctx.route("**/*", only_local)
        pg = ctx.new_page()
        pg.goto(url)
        broken = pg.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        wide = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        shots = os.environ.get("SCREENSHOTS")
        if shots:
            for name, sel in (("report_top", "h1"), ("report_theory", "#t4"), ("report_results", "#results")):
                pg.evaluate(f"document.querySelector('{sel}').scrollIntoView()")
                pg.screenshot(path=str(Path(shots) / f"{name}.png"))
        browser.close()
    assert outside == []
    assert broken == 0 and wide <= 0


def test_an_experiment_lists_exactly_what_changed(repo):
    from src.run_diff import sampling_noise

    before = json.loads((repo / "metrics/train.json").read_text())
    try:
        sh(repo, "dvc", "exp", "run", "-S", "train.epochs=3", "-S", "evaluate.top_confused=2", "-n", "report-exp")
        p = Page((repo / "report/lab_report.html").read_text())
        assert [row[0] for row in p.tables["changed-params"][1:]] == ["evaluate.top_confused", "train.epochs"]
        assert p.tables["changed-params"][1:] == [["evaluate.top_confused", "5", "2"], ["train.epochs", "2", "3"]]
        rows = {r[0]: r[1:] for r in p.tables["changed-metrics"][1:]}
        assert rows["metrics/train.json epochs"] == [str(before["epochs"]), "3", "+1"]
        head = json.loads(sh(repo, "git", "show", "HEAD:metrics/eval.json").stdout)
        now = json.loads((repo / "metrics/eval.json").read_text())
        assert rows["metrics/eval.json test_acc"][:2] == [shown(head["test_acc"], "%"), shown(now["test_acc"], "%")]
        d = now["test_acc"] - head["test_acc"]
        band = sampling_noise(head["test_acc"], now["test_acc"], head["test_images"], now["test_images"])
        level = " ≈" if d and abs(d) < band else ""  # the tiny repo's few test images: a wide band
        assert rows["metrics/eval.json test_acc"][2] == f"{100 * d:+.2f} points{level}"
        # a change in the digits of its values (it was %+g of the value to 4 places: 116.2 / 9.0, -107.172)
        t0 = json.loads(sh(repo, "git", "show", "HEAD:metrics/timing.json").stdout)["train_seconds"]
        t1 = json.loads((repo / "metrics/timing.json").read_text())["train_seconds"]
        # 3 epochs against 2: more steps take longer, not slower, so the seconds get no mark either way
        assert json.loads((repo / "metrics/train.json").read_text())["steps"] > before["steps"]
        assert rows["metrics/timing.json train_seconds"] == [f"{t0:.1f}", f"{t1:.1f}", f"{t1 - t0:+.1f}"]
    finally:
        sh(repo, "git", "checkout", "--", ".")
        sh(repo, "dvc", "checkout", "-q", check=False)
        sh(repo, "dvc", "exp", "remove", "report-exp", check=False)  # the shared repo: later tests list its experiments


def test_an_experiment_on_other_classes_says_it_compares_two_tasks(tmp_path):
    """From 3 classes to all 10, test accuracy falls because the task is harder, not because the
    run got worse: the section says so and marks no change better or worse."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    three = dict(zip(params["data"]["classes"], (0.95, 0.96, 0.94)))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "metrics/eval.json").write_text(json.dumps({"test_acc": 0.95, "per_class_acc": three}))
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "git", "add", ".")
    sh(tmp_path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "three classes")
    now = {**params, "data": {**params["data"], "classes": "all"}}
    ten = dict.fromkeys(CIFAR10_CLASSES, 0.78)
    (tmp_path / "metrics/eval.json").write_text(json.dumps({"test_acc": 0.78, "per_class_acc": ten}))
    html = page_from(tmp_path, now)
    text = visible_text(html)
    assert (
        "A different task: the committed run told 3 classes apart (airplane, automobile, bird), this run 10 "
        "(airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck). Guessing alone scores 33 % there "
        "and 10 % here" in text
    )
    rows = {r[0]: r[1:] for r in Page(html).tables["changed-metrics"][1:]}
    assert rows["metrics/eval.json test_acc"] == ["95.00 %", "78.00 %", "-17.00 points"]
    section = html[html.index('id="changed-metrics"') : html.index("</table>", html.index('id="changed-metrics"'))]
    assert "r up" not in section and "r down" not in section  # neither better nor worse
    assert 'id="changed-unlike"' not in html  # the task note above says "other classes" once, at length
    from src.lab_report.changes import other_task

    reordered = [{"key": "data.classes", "before": ["cat", "dog"], "after": ["dog", "cat"]}]
    assert other_task(reordered) is None  # the same two classes in another order: the same task


def test_an_experiment_whose_scores_moved_within_the_noise_says_so(tmp_path):
    """Another seed moved test accuracy by 7 images of 3,000 and the section showed it green or red,
    as if the change had made the run better or worse. A move smaller than one standard error of the
    difference is ≈ and uncoloured, a note says what that means; a larger one keeps its colour."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    names = params["data"]["classes"]
    (tmp_path / "metrics").mkdir()

    def scores(acc: float, per_class: tuple[float, ...]) -> str:
        return json.dumps({"test_acc": acc, "test_images": 3000, "per_class_acc": dict(zip(names, per_class))})

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "metrics/eval.json").write_text(scores(0.9587, (0.950, 0.990, 0.9361)))
    (tmp_path / "metrics/stats.json").write_text(json.dumps({"val_images": 1500}))
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "git", "add", ".")
    sh(tmp_path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "seed 0")
    (tmp_path / "metrics/eval.json").write_text(scores(0.9563, (0.952, 0.960, 0.9569)))
    html = page_from(tmp_path, {**params, "train": {**params["train"], "seed": 1}})
    rows = {r[0]: r[1:] for r in Page(html).tables["changed-metrics"][1:]}
    assert rows["metrics/eval.json test_acc"] == ["95.87 %", "95.63 %", "-0.24 points ≈"]  # band ±0.52
    assert rows[f"metrics/eval.json per_class_acc.{names[0]}"][2] == "+0.20 points ≈"  # ±0.97 a class
    assert rows[f"metrics/eval.json per_class_acc.{names[1]}"][2] == "-3.00 points"  # ±0.67: beyond
    section = html[html.index('id="changed-metrics"') : html.index("</table>", html.index('id="changed-metrics"'))]
    cells = re.findall(r'<td class="r ([a-z]*)">([^<]*)</td></tr>', section)
    assert [c for c in cells if "≈" in c[1]] == [("", "-0.24 points ≈"), ("", "+0.20 points ≈")]  # no colour
    assert ("down", "-3.00 points") in cells and ("up", "+2.08 points") in cells
    text = visible_text(html)
    assert "≈ within the noise. A score that moved less than one standard error" in text
    assert "A time or speed" not in text  # no time moved: the note says only what the table marks
    short = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True)
    assert f"differ from commit <code>{short.stdout.strip()}</code>" in html  # the baseline named by its commit
    assert "A green or red change is a hint, not proof" in text and "<code>benchmarks/results</code>" in html
    # a move of a point and a half on 3,000 images is beyond it: coloured, and no note
    (tmp_path / "metrics/eval.json").write_text(scores(0.9437, (0.950, 0.990, 0.9361)))
    html = page_from(tmp_path, {**params, "train": {**params["train"], "seed": 1}})
    rows = {r[0]: r[1:] for r in Page(html).tables["changed-metrics"][1:]}
    assert rows["metrics/eval.json test_acc"][2] == "-1.50 points" and 'id="changed-noise"' not in html


def test_an_experiment_on_another_machine_marks_neither_its_times_nor_its_scores(tmp_path):
    """A student's laptop (bf16, AVX-512) against the committed run (fp32, AVX2): the section coloured
    the training seconds green and images/s red, and the scores too, where the review says the
    runs are not like for like and marks nothing; a 9-step run's scores likewise."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    names = params["data"]["classes"]
    (tmp_path / "metrics").mkdir()

    def write(acc: float, seconds: float, ips: float, **train) -> None:
        ev = {"test_acc": acc, "test_images": 3000, "per_class_acc": dict.fromkeys(names, acc)}
        (tmp_path / "metrics/eval.json").write_text(json.dumps(ev))
        (tmp_path / "metrics/train.json").write_text(json.dumps({"best_val_acc": acc, "steps": 312, **train}))
        (tmp_path / "metrics/timing.json").write_text(json.dumps({"train_seconds": seconds, "images_per_s": ips}))

    committed = {"device": "cpu", "precision": "fp32", "cpu_capability": "AVX2", "threads": 2, "model": "fast_cnn"}
    committed.update(params=655416, batch_size=256)
    write(0.9563, 133.4, 598.6, **committed)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "metrics/stats.json").write_text(json.dumps({"val_images": 1500}))
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "git", "add", ".")
    sh(tmp_path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "committed")
    lr = {**params, "train": {**params["train"], "lr": 0.05}}
    write(0.9200, 70.0, 1160.0, **{**committed, "precision": "bf16", "cpu_capability": "AVX512"})

    def marked(html: str) -> list[str]:
        section = html[html.index('id="changed-metrics"') : html.index("</table>", html.index('id="changed-metrics"'))]
        return re.findall(r'<td class="r (up|down)">([^<]*)</td></tr>', section)

    html = page_from(tmp_path, lr)
    assert marked(html) == []  # −3.6 points and twice the speed, on other kernels and another precision
    assert (
        "Not like for like, so a change where it matters is marked neither better nor worse: another machine or "
        "precision: cpu fp32 AVX2 2 threads against cpu bf16 AVX512 2 threads — the times are not comparable, nor "
        "the scores to a few tenths of a point (other kernels round differently)." in visible_text(html)
    )
    write(0.9200, 70.0, 1160.0, **{**committed, "threads": 1})  # a queue worker's one thread: times only
    html = page_from(tmp_path, lr)
    assert {row for _, row in marked(html)} == {"-3.63 points"}
    assert "another thread count: cpu fp32 AVX2 2 threads against cpu fp32 AVX2 1 thread" in visible_text(html)
    write(0.9200, 133.0, 598.0, **{**committed, "steps": 9})
    html = page_from(tmp_path, lr)
    assert marked(html) == [] and "this run trained 9 steps only: its scores say little." in visible_text(html)
    write(0.9200, 133.0, 598.0, **committed)  # like for like: marked, and no such note
    html = page_from(tmp_path, lr)
    assert ("down", "-3.63 points") in marked(html) and 'id="changed-unlike"' not in html
    write(0.9200, 870.0, 91.0, **committed)  # the same work at a sixth of the speed: a busy machine
    html = page_from(tmp_path, lr)
    assert {row for _, row in marked(html)} == {"-3.63 points"}
    assert "images/s 599 against 91 (6.6× apart) with the same model, batch size and machine" in visible_text(html)


def test_a_project_in_a_folder_of_its_repository_reads_its_committed_files(tmp_path):
    """`git show REV:params.yaml` reads from the repository's top, so a lab in a folder of a larger
    repository (`dvc init --subdir`) found no committed file: no "What changed", an empty review."""
    from src.lab_report.gather import git_show

    lab = tmp_path / "course" / "lab"
    lab.mkdir(parents=True)
    (lab / "params.yaml").write_text("train: {lr: 0.03}\n")
    sh(tmp_path / "course", "git", "init", "-q")
    sh(tmp_path / "course", "git", "add", ".")
    sh(tmp_path / "course", "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lab")
    assert git_show(lab, "HEAD", "params.yaml") == "train: {lr: 0.03}\n"
    assert git_show(tmp_path / "course", "HEAD", "lab/params.yaml") == "train: {lr: 0.03}\n"
    assert git_show(lab, "HEAD", "metrics/eval.json") is None


def test_a_changed_param_the_run_did_not_use_is_named(tmp_path):
    """`-S augment.crop_pad_mode=zeros` with crops off, or lookahead's decay with lookahead off,
    changes nothing; the section said only that they differ. The notebook's net is not such a key:
    the theory stage draws it whatever model trains."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "metrics").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "metrics/train.json").write_text(json.dumps({"device": "cpu", "recipe": "default"}))
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "git", "add", ".")
    sh(tmp_path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "committed")
    now = yaml.safe_load(yaml.safe_dump(params))
    now["augment"].update(crop_padding=0, crop_pad_mode="zeros")
    now["train"]["lookahead_decay"] = 0.9
    now["model"]["seed_cnn"]["dropout"] = 0.2  # used: the theory stage draws the notebook's net whatever trains
    text = visible_text(page_from(tmp_path, now))
    assert (
        "Not used by this run, so changing them changed nothing: augment.crop_pad_mode : used only when "
        "augment.crop_padding is above 0; train.lookahead_decay : used only when train.lookahead_steps is above 0."
        in text  # visible_text puts a space for each tag: the </code> before each colon
    )
    now["augment"]["crop_pad_mode"] = params["augment"]["crop_pad_mode"]
    now["train"]["lookahead_decay"] = params["train"]["lookahead_decay"]
    assert "Not used by this run" not in visible_text(page_from(tmp_path, now))  # crops off: used, and said nowhere


def page_from(root: Path, params: dict | None = None) -> str:
    """The report page from the files under `root`, the workspace's params being `params` (default:
    the committed params.yaml)."""
    ctx = render.context(
        root,
        Source("report/numbers.json", None, "made by the report stage"),
        "report/figures",
        params if params is not None else yaml.safe_load((REPO / "params.yaml").read_text()),
    )
    ctx["recipe"] = load_params(REPO / "params.yaml").model_dump()
    return render.render(REPO / "templates/lab_report.html.j2", ctx)


def visible_text(html: str) -> str:
    """The page's text as a reader sees it: tags dropped, whitespace runs made one space."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_a_time_budgeted_run_says_so_in_the_training_table(tmp_path):
    """With train.time_budget_s the epochs param is ignored: the table gives the budget and the
    epochs' worth of steps the run fitted in it."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "metrics").mkdir()
    train = {"epochs": 1, "steps": 5, "batch_size": 256, "epochs_equivalent": 0.0962, "time_budget_s": 20.0}
    (tmp_path / "metrics/train.json").write_text(json.dumps(train))
    (tmp_path / "metrics/timing.json").write_text(json.dumps({"seconds": 12.15, "train_seconds": 11.09}))
    html = page_from(tmp_path)
    text = visible_text(html)
    assert "1 epoch on" in text and "1 epochs" not in text  # one epoch, said as such
    rows = {r[0]: r[1] for r in Page(html).tables["recipe"]}
    assert rows["epochs"] == (
        "1 (5 steps of 256 images: 0.10 epochs' worth, in a time budget of 20 s, the schedule sized to fit it)"
    )
    assert rows["time"].startswith("11.1 s of training steps") and "12.2 s with each epoch's validation" in rows["time"]
    train["time_budget_s"] = None
    (tmp_path / "metrics/train.json").write_text(json.dumps(train))
    assert Page(page_from(tmp_path)).tables["recipe"][1][1] == "1 (5 steps of 256 images)"


def test_a_missing_input_is_named_on_the_page_not_a_crash(tmp_path):
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    html = page_from(tmp_path)  # nothing run at all
    assert "Not in this report yet" in html
    assert "<code>metrics/eval.json</code> — made by the evaluate stage: run `dvc repro evaluate`" in html
    assert "<code>metrics/theory.json</code> — made by the theory stage" in html
    assert "Not drawn: <code>plots/visualize/gradcam.png</code> — made by the visualize stage" in html
    assert "Not drawn: <code>plots/visualize/feature_maps_*.png</code>" in html
    assert "None" not in html.replace("none", "") and "null" not in html


def test_a_broken_input_is_named_and_the_classes_come_from_another_file(tmp_path, repo):
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "plots").mkdir()
    (tmp_path / "metrics/eval.json").write_text('{"test_acc": 0.9')  # cut off mid-write
    shutil.copy(repo / "plots/visualize.json", tmp_path / "plots/visualize.json")
    html = page_from(tmp_path)
    assert "<code>metrics/eval.json</code> — unreadable (JSONDecodeError" in html
    (tmp_path / "params.yaml").write_text("train:\n\tepochs: 6\n")  # a tab: YAML's error, said as params.yaml's is
    html = page_from(tmp_path)
    assert (
        "<code>params.yaml</code> — unreadable (not valid YAML: line 2, column 1: found character &#39;\\t&#39; that "
        "cannot start any token; indent with spaces, not tabs)" in html
    )
    classes = json.loads((repo / "plots/visualize.json").read_text())["classes"]
    assert all(f"<th>{c}</th>" in html for c in classes)  # the confusion table still has its rows
