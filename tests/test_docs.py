"""The student-facing docs (README.md, docs/*.md) say what the project does, not how it was built:
no issue numbers or build-session remarks (history lives in CHANGELOG.md, which holds to the same), tables whose
rows have as many cells as their header, and links and images that lead to files that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from src.params import flatten, parse_params
from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
IDS = [str(p.relative_to(REPO)) for p in DOCS]
LINKED = [*DOCS, REPO / "CHANGELOG.md"]  # the history too: what changed and what was measured, no tracker numbers

ISSUE_REF = re.compile(r"(?<![\w&/])#\d+\b")  # "issue #13", "(#10)"; not anchors, colours or entities
BUILDER_WORDS = re.compile(r"\bsessions?\b|\bwas lent\b|\bdevice tool\b|\bnot drawn\b", re.IGNORECASE)
DELIMITER_ROW = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# `dvc exp run -S key=value` and the benchmarks' `--set key=value key=value`
OVERRIDE = re.compile(r"-S\s+['\"]?([A-Za-z_][\w.]*)=")
SET_LIST = re.compile(r"--set((?:\s+['\"]?[A-Za-z_][\w.]*=[^\s`'\"]*['\"]?)+)")


def prose(path: Path) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((n, line))
    return lines


def cells(row: str) -> int:
    """Cells of a Markdown table row as GitHub counts them: split on pipes not escaped by a backslash."""
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return len(re.split(r"(?<!\\)\|", row))


def tables(path: Path) -> list[tuple[int, list[tuple[int, str]]]]:
    """Each table: the header's line number and its rows (header first, delimiter row left out)."""
    lines, out, i = prose(path), [], 0
    while i + 1 < len(lines):
        (n, head), (_, delim) = lines[i], lines[i + 1]
        if head.lstrip().startswith("|") and DELIMITER_ROW.match(delim.strip()):
            rows, i = [(n, head)], i + 2
            while i < len(lines) and lines[i][1].lstrip().startswith("|"):
                rows.append(lines[i])
                i += 1
            out.append((n, rows))
        else:
            i += 1
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for _, line in prose(path) if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("path", LINKED, ids=[str(p.relative_to(REPO)) for p in LINKED])
def test_no_issue_numbers_or_build_history_wording(path):
    found = [
        f"{path.name}:{n}: {m.group(0)!r}"
        for n, line in prose(path)
        for m in [*ISSUE_REF.finditer(line), *BUILDER_WORDS.finditer(line)]
    ]
    assert not found, "say what the project does (history goes to CHANGELOG.md): " + "; ".join(found)


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_every_table_row_has_as_many_cells_as_its_header(path):
    bad = [
        f"{path.name}:{n}: {cells(row)} cells, the header (line {start}) has {cells(rows[0][1])}"
        for start, rows in tables(path)
        for n, row in rows[1:]
        if cells(row) != cells(rows[0][1])
    ]
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("path", LINKED, ids=[str(p.relative_to(REPO)) for p in LINKED])
def test_relative_links_and_images_exist(path):
    bad = []
    for n, line in prose(path):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                bad.append(f"{path.name}:{n}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{path.name}:{n}: {target} (no such heading in {dest.name})")
    assert not bad, "; ".join(bad)


def override_keys(text: str) -> list[str]:
    """The params keys a text's `-S key=value` and `--set key=value …` overrides name."""
    keys = OVERRIDE.findall(text)
    for m in SET_LIST.finditer(text):
        keys += re.findall(r"([A-Za-z_][\w.]*)=", m.group(1))
    return keys


def unknown_keys(keys: list[str], params: dict) -> list[str]:
    """Those of `keys` that are not a dotted key of `params` (`key`: the docs' placeholder)."""
    known = flatten(params)
    return [key for key in keys if key != "key" and key not in known]


@pytest.mark.parametrize("path", LINKED, ids=[str(p.relative_to(REPO)) for p in LINKED])
def test_every_override_names_a_key_of_params_yaml(path):
    """A renamed or mistyped param leaves no command in the docs that stops at its first word."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    bad = unknown_keys(override_keys(path.read_text()), params)
    assert not bad, f"{path.name}: not keys of params.yaml: {sorted(set(bad))}"


def test_the_checks_catch_what_they_are_for(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "# Title\n\nSee issue #9 and [here](#title).\n\n| a | b |\n|---|---|\n| 1 | 2 | 3 |\n"
        "| `x \\| y` | z |\n\n```\n| not | a | table |\n```\n"
    )
    assert [m.group(0) for _, line in prose(doc) for m in ISSUE_REF.finditer(line)] == ["#9"]
    assert [[cells(r) for _, r in rows] for _, rows in tables(doc)] == [[2, 3, 2]]
    assert anchors(doc) == {"title"} and slug("On a GPU: the `gpu` recipe") == "on-a-gpu-the-gpu-recipe"
    assert not ISSUE_REF.search("colour #1f77b4, link (#results-by-machine), &#8212;")
    keys = override_keys("dvc exp run -S train.epoch=3 -S 'data.classes=[cat,dog]' x --set a.b=1 train.lr=0.1`")
    assert keys == ["train.epoch", "data.classes", "a.b", "train.lr"]
    params = {"train": {"epochs": 6, "lr": 0.03}, "data": {"classes": ["cat"]}}
    assert unknown_keys([*keys, "key"], params) == ["train.epoch", "a.b"]


def test_the_notebook_recipe_command_keeps_its_values_on_a_gpu():
    """docs/training.md's notebook recipe is a GPU run (150 epochs of AdamW at batch 128): on CUDA
    its values must train as written, not give way to the `gpu` section's speed recipe."""
    text = (REPO / "docs" / "training.md").read_text()
    block = text.split("## The notebook's recipe", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in re.findall(r"-S\s+([\w.]+)=(\S+)", block):
        *parents, last = key.split(".")
        section = raw
        for part in parents:
            section = section[part]
        section[last] = yaml.safe_load(value)
    p, recipe = parse_params(raw).recipe_for("cuda")
    assert recipe == "default"
    assert (p.model.name, p.train.optimizer, p.train.epochs, p.train.batch_size) == ("seed_cnn", "adamw", 150, 128)


# the docs' copies of a committed stage figure: shown as what `dvc repro` draws, so they must be it
FIGURE_COPIES = {
    "docs/confusion_matrix.png": "plots/visualize/confusion_matrix.png",
    "docs/gradcam.png": "plots/visualize/gradcam.png",
    "docs/training_curves.png": "plots/visualize/training_curves.png",
    "docs/feature_maps.png": "plots/visualize/feature_maps_airplane_1.png",
    "docs/convolution.png": "plots/theory/2_convolution.png",
}


@pytest.mark.parametrize("copy", sorted(FIGURE_COPIES))
def test_the_docs_show_the_figures_the_pipeline_draws_now(copy):
    """A figure redrawn by a code change must be copied to the docs too (`cp <plot> <copy>` after
    `dvc repro`), or the docs describe one picture and show an older one. The committed plot counts
    as well as the workspace's: an experiment's own figures do not fail the suite."""
    plot = FIGURE_COPIES[copy]
    committed = subprocess.run(["git", "show", f"HEAD:{plot}"], cwd=REPO, capture_output=True, check=True).stdout
    assert (REPO / copy).read_bytes() in ((REPO / plot).read_bytes(), committed), f"cp {plot} {copy}"
