"""`dvc plots show` / `dvc plots diff` pages render offline in headless Chromium: every vega chart
draws an SVG or a canvas and every image loads, with networking disabled."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import sh

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHECK = """
<script>
window.addEventListener('load', () => setTimeout(() => {
  const charts = [...document.querySelectorAll('.vega-embed')];  // what vegaEmbed() built
  const drawn = charts.filter(d => d.querySelector('svg, canvas'));
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0);
  document.body.setAttribute('data-check', JSON.stringify(
    {charts: charts.length, drawn: drawn.length, images: imgs.length, loaded: ok.length,
     vega: typeof vegaEmbed}));
}, 4000));
</script>
"""


def render(page: Path) -> dict:
    """Open `page` in headless Chromium with no network; return what the in-page check saw."""
    probe = page.with_name("check_" + page.name)
    html = page.read_text()
    at = html.rfind("</body>")  # the inlined vega code has "</body>" in its strings: use the last one
    probe.write_text(html[:at] + CHECK + html[at:])
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--allow-file-access-from-files",
         "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--user-data-dir={page.parent / '.chromium'}", "--virtual-time-budget=60000", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=180)
    m = re.search(r"data-check=\"([^\"]*)\"", out.stdout)
    assert m, f"the page never finished loading:\n{out.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"'))


def _check_page(folder: Path, min_charts: int, min_images: int) -> None:
    page = folder / "index.html"
    html = page.read_text()
    assert not re.search(r"<script[^>]+src=\"https?://", html), "the page loads scripts from the network"
    calls = html.count("vegaEmbed('#")  # one per vega chart DVC put on the page
    assert calls >= min_charts
    res = render(page)
    assert res["vega"] == "function"
    assert res["charts"] == calls and res["drawn"] == calls, res
    assert res["images"] >= min_images and res["loaded"] == res["images"], res


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: install Debian's `chromium` package "
                                               "(.ci/run does) to run the offline rendering test")
def test_plots_show_and_diff_render_offline(repo, tmp_path):
    sh(repo, "dvc", "plots", "show", "-o", str(tmp_path / "show"))
    # 6 vega plots (accuracy, loss, lr, 2 confusion, per-class) and every PNG of stats, visualize, theory
    n_png = len(list((repo / "plots").rglob("*.png")))
    _check_page(tmp_path / "show", min_charts=6, min_images=n_png)
    sh(repo, "dvc", "plots", "diff", "HEAD", "-o", str(tmp_path / "diff"))
    _check_page(tmp_path / "diff", min_charts=6, min_images=n_png)


def test_dvc_charts_say_what_the_pngs_say(repo):
    """The DVC charts agree with the PNGs: whole epochs 1..N, one colour per split, the lr of every
    step, confusion rows = true class, and the normalised confusion divides by the true class."""
    specs = {name: entries[0]["content"] for name, entries in
             json.loads(sh(repo, "dvc", "plots", "show", "--json").stdout)["data"].items()
             if entries and "content" in entries[0]}
    epochs = json.loads((repo / "metrics/train.json").read_text())["epochs"]
    acc = specs["Accuracy (train vs validation)"]
    rows = acc["data"]["values"]
    assert sorted({int(r["step"]) for r in rows}) == list(range(1, epochs + 1))
    assert acc["encoding"]["color"]["field"] == "filename" and len({r["filename"] for r in rows}) == 2
    assert acc["encoding"]["x"]["axis"]["format"] == "d"
    lr = specs["Learning rate (every step)"]["data"]["values"]
    assert len(lr) == json.loads((repo / "metrics/train.json").read_text())["steps"]
    for name in ("Confusion matrix (test; rows true, columns predicted)", "Confusion matrix, row-normalised = recall (test)"):
        enc = specs[name]["spec"]["encoding"]
        assert (enc["x"]["field"], enc["y"]["field"]) == ("predicted", "actual"), name
    norm = specs["Confusion matrix, row-normalised = recall (test)"]["spec"]["transform"]
    assert {"joinaggregate": [{"op": "sum", "field": "xy_count", "as": "sum_y"}], "groupby": ["actual"]} in norm
