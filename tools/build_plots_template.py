"""Build templates/plots_offline.html: DVC's plots page with vega, vega-lite and vega-embed inlined,
so `dvc plots show` / `dvc plots diff` draw their charts with no network (a lab room, CI), and a
table of contents with the plots in a student's reading order.

The scripts come from the npm registry at the pinned versions below (`npm pack`, no install);
run `python tools/build_plots_template.py` to rebuild after changing a version, or
`python tools/build_plots_template.py --reuse` to rebuild the page around the scripts already
inlined (no network: after changing SECTIONS or the page). DVC's page template needs only
`{plot_divs}`; leaving out `{scripts}` keeps DVC's CDN <script> tags out.

The order: DVC writes every vega chart first (in dvc.yaml's order), then every image sorted by
folder (plots/data, plots/theory, plots/visualize), so dvc.yaml alone cannot give a reading order.
A small inline script moves each plot into the first section of SECTIONS whose pattern matches
its title (a chart) or its path (an image), in the patterns' order, and lists them at the top.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# the majors DVC's vega-lite specs are written for (dvc-render loads vega@5, vega-lite@5, vega-embed@6)
PINNED = {
    "vega": ("5.33.1", "build/vega.min.js"),
    "vega-lite": ("5.23.0", "build/vega-lite.min.js"),
    "vega-embed": ("6.29.0", "build/vega-embed.min.js"),
}
OUT = Path(__file__).resolve().parents[1] / "templates" / "plots_offline.html"

# The page's sections in reading order: (heading, JavaScript regexps tried on a chart's title or an
# image's path). Within a section plots follow the order of the pattern they match. A plot that
# matches none goes to "Other plots" at the end (tests/test_plots_page.py fails on that).
SECTIONS = [
    ("The data", [r"/samples_per_class\.", r"^plots/data/"]),
    ("Training", [r"^Accuracy", r"^Loss", r"^Learning rate", r"/training_curves\.", r"/augmentation\."]),
    (
        "Test results",
        [
            r"^Confusion matrix \(",
            r"^Confusion matrix, row",
            r"^Per-class",
            r"/confusion_matrix\.",
            r"/per_class_accuracy\.",
            r"/sample_predictions\.",
            r"/confident_mistakes\.",
        ],
    ),
    (
        "Inside the network",
        [r"/filters_first_layer\.", r"/filters_deep_layer\.", r"/feature_maps_", r"/top_patches_", r"/gradcam\."],
    ),
    ("Theory", [r"^plots/theory/"]),
]

# Right after the libraries: remember each chart's title (vega-embed replaces the div's content).
TITLES_JS = """window.plotTitles = {};
(function (embed) {
  const wrapped = function (el, spec, opts) {
    const t = spec && spec.title;
    window.plotTitles[String(el).replace(/^#/, '')] = typeof t === 'string' ? t : (t && t.text) || '';
    return embed(el, spec, opts);
  };
  window.vegaEmbed = Object.assign(wrapped, embed);
})(window.vegaEmbed);"""

# After the plots: sort them into sections and write the contents (DOM only, nothing fetched).
CONTENTS_JS = """(function (sections) {
  const plots = document.getElementById('plots'), nav = document.getElementById('contents');
  const el = (tag, props, ...kids) => {
    const e = Object.assign(document.createElement(tag), props);
    e.append(...kids);
    return e;
  };
  const nameOf = (div) => window.plotTitles[div.id] || ((div.querySelector('p') || {}).textContent || div.id).trim();
  const label = (n) => n.includes('/') ? n.split('/').pop().replace(/\\.\\w+$/, '').replace(/_/g, ' ') : n;
  const groups = sections.map(([title, pats]) => ({title, pats: pats.map((p) => new RegExp(p)), items: []}));
  const other = {title: 'Other plots', pats: [], items: []};
  for (const div of [...plots.children].filter((d) => d.tagName === 'DIV' && d.id)) {
    const name = nameOf(div);
    let hit = null;
    groups.forEach((g) => g.pats.forEach((re, k) => { if (!hit && re.test(name)) hit = {g, k}; }));
    (hit ? hit.g : other).items.push({div, name, rank: hit ? hit.k : 0});
  }
  const list = el('ol', {});
  [...groups, other].filter((g) => g.items.length).forEach((g, i) => {
    const id = 'section-' + (i + 1), links = el('ul', {});
    const up = el('a', {href: '#contents', className: 'up'}, '\\u2191 contents');
    const section = el('section', {id}, el('h2', {}, `${i + 1}. ${g.title} `, up));
    for (const it of g.items.sort((a, b) => a.rank - b.rank)) {
      section.append(it.div);
      links.append(el('li', {}, el('a', {href: '#' + it.div.id, title: it.name}, label(it.name))));
    }
    plots.append(section);
    list.append(el('li', {}, el('a', {href: '#' + id}, g.title), links));
  });
  nav.append(list);
})(@SECTIONS@);"""

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>cifar-cnn-lab · DVC plots (offline)</title>
    <!-- inlined from the npm registry: @VERSIONS@ -->
@SCRIPTS@
    <script type="text/javascript">
@TITLES@
    </script>
    <style>
        body { font-family: system-ui, sans-serif; margin: 16px; }
        table { border-spacing: 15px; }
        img { max-width: 100%; }
        /* dvc plots diff sets each revision's image side by side on one line that can't scroll
           (nowrap, overflow hidden): two halves a row, the third revision and on in the next rows */
        #plots div:has(> div > img) { white-space: normal !important; }
        #plots div:has(> img):not(:only-of-type) { max-width: calc(50% - 14px); }
        #contents ol { columns: 2 24em; }
        #contents li { break-inside: avoid; }
        #contents ol > li { margin-bottom: 0.6em; font-weight: 600; }
        #contents ul { font-weight: normal; }
        section > h2 { border-top: 2px solid #ccc; padding-top: 0.4em; margin-top: 1.5em; }
        a.up { font-size: small; font-weight: normal; }
    </style>
</head>
<body>
    <h1>cifar-cnn-lab: the plots</h1>
    <nav id="contents"><h2>Contents</h2></nav>
    <main id="plots">
    {plot_divs}
    </main>
    <script type="text/javascript">
@CONTENTS@
    </script>
</body>
</html>
"""


def fetch(name: str, version: str, member: str, workdir: Path) -> str:
    tgz = (
        subprocess.run(
            ["npm", "pack", f"{name}@{version}", "--silent"], cwd=workdir, check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    with tarfile.open(workdir / tgz) as tar:
        js = tar.extractfile(f"package/{member}").read().decode()
    if "</script" in js.lower():
        js = js.replace("</script", "<\\/script")  # cannot end the inline <script> early
    return js


def downloaded() -> tuple[str, str]:
    """(versions comment, the three <script> tags) from the npm registry."""
    parts, versions = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (version, member) in PINNED.items():
            js = fetch(name, version, member, Path(tmp))
            sha = hashlib.sha256(js.encode()).hexdigest()[:12]
            versions.append(f"{name}@{version} ({member}, sha256 {sha})")
            parts.append(f'    <script type="text/javascript">/* {name}@{version} */\n{js}\n    </script>')
    return "; ".join(versions), "\n".join(parts)


def inlined(page: str) -> tuple[str, str]:
    """(versions comment, the three <script> tags) already in a built page: the first library's
    opening tag to the closing tag after vega-embed's (their code cannot hold one: see fetch)."""
    versions = re.search(r"<!-- inlined from the npm registry: (.*?) -->", page).group(1)
    start = page.index('    <script type="text/javascript">/* vega@')
    end = page.index("\n    </script>", page.index("/* vega-embed@", start)) + len("\n    </script>")
    return versions, page[start:end]


def page(versions: str, scripts: str) -> str:
    """The whole template. Markers are replaced, not str.format()ted: the JavaScript is full of
    braces. The libraries go in last, so nothing in their code is taken for a marker."""
    out = PAGE
    for marker, text in (
        ("@VERSIONS@", versions),
        ("@TITLES@", TITLES_JS),
        ("@CONTENTS@", CONTENTS_JS.replace("@SECTIONS@", json.dumps(SECTIONS))),
        ("@SCRIPTS@", scripts),
    ):
        out = out.replace(marker, text)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reuse", action="store_true", help="keep the scripts already inlined in the page (no network)")
    args = ap.parse_args(argv)
    versions, scripts = inlined(OUT.read_text()) if args.reuse else downloaded()
    OUT.write_text(page(versions, scripts))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB): {versions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
