"""The explorer in headless Chromium (Debian's, driven by Playwright) with the network cut off:
the page loads from 127.0.0.1 alone; choosing an image shows the probabilities the model gives in
Python (3 decimals); every layer's maps are drawn; a clicked position's sum equals PyTorch's; a test
image shows its true class in words and on its bar; a PNG upload is predicted and says it has no true
class; a text file or a bad index gets the error message and the previous analysis is cleared.

    EXPLORER_ROOT=. SCREENSHOTS=docs python -m pytest tests/test_explorer_browser.py   # the README's pictures
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from src.explorer.app import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: install Debian's `chromium` (.ci/run does)")


@pytest.fixture(scope="module")
def served(request):
    """The explorer on a free port, for the end-to-end repo (or EXPLORER_ROOT, e.g. `.` for the README's pictures)."""
    from werkzeug.serving import make_server

    repo = (
        Path(os.environ["EXPLORER_ROOT"]).resolve()
        if os.environ.get("EXPLORER_ROOT")
        else request.getfixturevalue("repo")
    )
    server = make_server("127.0.0.1", 0, create_app(root=repo), threaded=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", repo
    server.shutdown()


@pytest.fixture(scope="module")
def page(served):
    from playwright.sync_api import sync_playwright

    url, repo = served
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        )
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})

        def only_local(route):
            if route.request.url.startswith(url) or route.request.url.startswith("data:"):
                return route.continue_()
            outside.append(route.request.url)
            return route.abort()

        ctx.route("**/*", only_local)
        pg = ctx.new_page()
        t0 = time.perf_counter()
        pg.goto(url)
        pg.wait_for_selector("#thumbs figure", timeout=60_000)
        pg.load_seconds = time.perf_counter() - t0
        yield pg, repo, outside
        browser.close()


def model_probs(repo: Path, index: int) -> np.ndarray:
    from src.data.cifar import Subset, normalize
    from src.training.checkpoints import load_trained

    sub = Subset.load(repo / "data/subset.pt")
    model, ck = load_trained(repo / "models/best.pt", sub.classes)
    with torch.no_grad():
        x = normalize(sub.test_x[index : index + 1], torch.tensor(ck["mean"]), torch.tensor(ck["std"]))
        return model.eval()(x).softmax(1)[0].numpy()


def shot(pg, name: str, selector: str) -> None:
    """A window-sized picture with `selector` at the top (only with SCREENSHOTS=<folder>)."""
    if os.environ.get("SCREENSHOTS"):
        pg.eval_on_selector(selector, "e => e.scrollIntoView()")
        pg.screenshot(path=str(Path(os.environ["SCREENSHOTS"]) / name))


def test_the_page_loads_with_the_network_cut_off(page):
    pg, repo, outside = page
    acc = json.loads((repo / "metrics/eval.json").read_text())["test_acc"]
    assert f"test accuracy {100 * acc:.2f} %" in pg.inner_text("#model-info")  # the report's two decimals
    assert pg.load_seconds < 30
    assert outside == []  # nothing asked for outside 127.0.0.1


def show_list(pg, which: str) -> int:
    """Pick `which` in the list filter and wait until the page shows that list's first page: its own
    "page 1 of N (M images)", from the API. Waiting for "page 1 of" alone let the old list's text
    pass before the new list came (a slow CI run read the old list's page count and timed out)."""
    first = pg.evaluate(
        """async (which) => {
            const q = new URLSearchParams({ cls: document.getElementById("f-class").value, which,
                                            order: document.getElementById("f-order").value, page: 0 });
            return (await fetch(`/api/images?${q}`)).json();
        }""",
        which,
    )
    pg.select_option("#f-which", which)
    want = f"page 1 of {first['pages']} ({first['total']} images)"
    pg.wait_for_function("want => document.querySelector('#page-info').textContent === want", arg=want)
    return first["pages"]


def test_the_pager_stops_at_both_ends(page):
    """The API refuses a page past either end, so the buttons there are off, not a red error line."""
    pg, _, _ = page
    pages = show_list(pg, "wrong")  # a short list: its last page is near
    assert pg.is_disabled("#prev")
    for p in range(2, pages + 1):  # each click once the last one's page is shown
        pg.click("#next")
        pg.wait_for_function(f"document.querySelector('#page-info').textContent.startsWith('page {p} of')")
    assert pg.is_disabled("#next") and pg.is_hidden("#error")
    show_list(pg, "all")


def test_choosing_an_image_shows_the_models_probabilities_and_every_layer(page):
    pg, repo, outside = page
    first = pg.locator("#thumbs figure").nth(2)
    index = int(first.get_attribute("data-index"))
    first.click()
    pg.wait_for_selector("#probs .prob")
    shown = {
        el.get_attribute("data-class"): el.inner_text().split("\n")[-1].strip()
        for el in pg.query_selector_all("#probs .prob")
    }
    from src.data.cifar import Subset

    classes = Subset.load(repo / "data/subset.pt").classes
    assert shown == {c: f"{p:.3f}" for c, p in zip(classes, model_probs(repo, index))}
    pg.wait_for_selector("#layers .layer img")
    pg.wait_for_function("[...document.querySelectorAll('#layers img')].every(i => i.complete && i.naturalWidth > 0)")
    names = [el.get_attribute("data-layer") for el in pg.query_selector_all("#layers .layer")]
    from src.training.checkpoints import load_trained

    model, _ = load_trained(repo / "models/best.pt", classes)
    assert names == model.feature_layers()
    pg.wait_for_function("document.getElementById('cam').naturalWidth > 0")
    assert outside == []


def test_a_clicked_position_is_summed_by_hand_as_pytorch_does(page):
    pg, _, _ = page
    pg.fill("#conv-channel", "3")
    pg.dispatch_event("#conv-channel", "change")
    box = pg.locator("#fmap").bounding_box()
    pg.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.6)
    eq = pg.wait_for_selector("#conv-sum .eq")
    assert eq.get_attribute("data-sum") == eq.get_attribute("data-torch")
    assert "Σ w·x + b" in pg.inner_text("#conv-sum")
    shot(pg, "explorer.png", "header")


def tagged(pg) -> dict[str, list[str]]:
    """The tags (text, not colour) each probability bar carries: "predicted", "true class"."""
    return {
        el.get_attribute("data-class"): [t.inner_text() for t in el.query_selector_all(".tag")]
        for el in pg.query_selector_all("#probs .prob")
    }


def choose_and_read(pg, index: int) -> tuple[str, dict[str, list[str]]]:
    """Click test image `index` (on the first page of thumbnails); the true-class line and the bars' tags."""
    pg.click(f'#thumbs figure[data-index="{index}"]')
    pg.wait_for_function(f"document.getElementById('view-title').textContent === 'Test image #{index}'")
    pg.wait_for_function("document.getElementById('cam').naturalWidth > 0")
    return pg.inner_text("#truth"), tagged(pg)


def test_a_test_image_shows_its_true_class_and_the_verdict(page):
    from src.data.cifar import Subset

    pg, repo, _ = page
    sub = Subset.load(repo / "data/subset.pt")
    index = 5
    true, pred = sub.classes[int(sub.test_y[index])], sub.classes[int(model_probs(repo, index).argmax())]
    verdict = "right" if true == pred else "wrong"
    truth, tags = choose_and_read(pg, index)
    assert truth == f"true class: {true} — predicted {pred} ({verdict})"
    assert tags[pred][0] == "predicted" and tags[true][-1] == "true class" and sum(map(len, tags.values())) == 2


def test_a_mistake_marks_the_true_class_and_the_prediction_on_two_bars(page):
    """The tiny end-to-end model makes no mistakes on its test split, so the server's answer is
    rewritten as if it had: the page must draw what the API says."""
    pg, _, _ = page

    def as_a_mistake(route):
        resp = route.fetch()
        body = resp.json()
        body["true_class"] = next(p["class"] for p in body["probs"] if p["class"] != body["pred"])
        body["correct"] = False
        route.fulfill(response=resp, json=body)

    pg.route("**/api/analyse", as_a_mistake)
    try:
        truth, tags = choose_and_read(pg, 7)
    finally:
        pg.unroute("**/api/analyse")
    pred = pg.get_attribute("#probs .prob.pred", "data-class")
    true = pg.get_attribute("#probs .prob.truth", "data-class")
    assert true != pred and truth == f"true class: {true} — predicted {pred} (wrong)"
    assert {c: t for c, t in tags.items() if t} == {pred: ["predicted"], true: ["true class"]}
    assert "miss" in pg.get_attribute("#probs .prob.pred", "class")  # drawn red as well


def test_an_uploaded_png_is_predicted_and_a_text_file_is_refused(page, tmp_path):
    from PIL import Image

    pg, _, _ = page
    picture = tmp_path / "plane.png"
    rgb = np.full((90, 120, 3), (135, 180, 230), dtype=np.uint8)
    rgb[40:50, 20:100] = 240
    Image.fromarray(rgb).save(picture)
    pg.set_input_files("#upload", str(picture))
    pg.wait_for_function("document.getElementById('view-title').textContent === 'Your upload'")
    assert len(pg.query_selector_all("#probs .prob")) >= 2 and pg.is_hidden("#error")
    pred = pg.get_attribute("#probs .prob.pred", "data-class")
    assert pg.inner_text("#truth") == f"uploaded image: no true class — predicted {pred}"
    assert [t for ts in tagged(pg).values() for t in ts] == ["predicted"]
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    pg.set_input_files("#upload", str(text))
    pg.wait_for_selector("#error:not([hidden])")
    assert "not a PNG or JPEG image" in pg.inner_text("#error")
    # the previous upload's analysis is gone: nothing on screen reads as the refused file's
    pg.wait_for_selector("#view", state="hidden")
    assert pg.query_selector_all("#probs .prob, #layers .layer") == [] and pg.inner_text("#truth") == ""
    assert pg.get_attribute("#image", "src") is None


def test_a_refused_test_index_clears_the_previous_image(page):
    pg, _, _ = page
    pg.locator("#thumbs figure").first.click()
    pg.wait_for_selector("#view", state="visible")
    pg.wait_for_selector("#probs .prob")
    pg.wait_for_function("document.getElementById('cam').naturalWidth > 0")  # the whole analysis is drawn
    pg.evaluate("choose({ index: 999999 }).catch(() => {})")  # what a stale link or a hand-made request sends
    pg.wait_for_selector("#error:not([hidden])")
    assert pg.inner_text("#error").startswith("test image 999999 does not exist (0–")
    pg.wait_for_selector("#view", state="hidden")
    assert pg.query_selector_all("#probs .prob") == [] and pg.inner_text("#view-title") == ""


def test_the_filters_view_draws_patches(page):
    pg, _, _ = page
    pg.click("#load-filters")
    pg.wait_for_selector("#filter-view .patches img", timeout=120_000)
    assert "not learned" in pg.inner_text("#filter-view .layer h4")
    shot(pg, "explorer_filters.png", "#filters")
