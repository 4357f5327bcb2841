"""notebooks/lab.ipynb: committed without outputs, and it runs top to bottom (nbclient) in a repo of
the tests' tiny data: the theory cells, `dvc repro`, an experiment, the report."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO, sh

NOTEBOOK = REPO / "notebooks" / "lab.ipynb"


def test_the_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert set(nb.metadata) <= {"kernelspec", "language_info"}


def test_the_pre_commit_hook_keeps_it_so(tmp_path):
    import subprocess

    import yaml

    hooks = [
        h["id"] for r in yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())["repos"] for h in r["hooks"]
    ]
    assert "nbstripout" in hooks
    verify = [sys.executable, "-m", "nbstripout", "--verify"]
    assert subprocess.run([*verify, str(NOTEBOOK)], capture_output=True).returncode == 0
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="left behind")]
    nb.cells[1].execution_count = 1
    nbformat.write(nb, tmp_path / "with_outputs.ipynb")
    assert subprocess.run([*verify, str(tmp_path / "with_outputs.ipynb")], capture_output=True).returncode != 0


def test_the_notebook_runs_top_to_bottom(repo, full_mirror, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # a student running the experiment cell again: it replaced its experiment, it used to add a second
    again = next(c for c in nb.cells if c.cell_type == "code" and "!dvc exp run" in c.source)
    listed = "\n".join(
        [
            "exps = subprocess.run(['dvc', 'exp', 'list', '--name-only'], capture_output=True, text=True)",
            "print('experiments:', exps.stdout.split())",
        ]
    )
    nb.cells += [nbformat.v4.new_code_cell(again.source), nbformat.v4.new_code_cell(listed)]
    (repo / "notebooks").mkdir(exist_ok=True)
    (tmp_path / "home").mkdir()
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CIFAR10_MIRROR": str(full_mirror),
        "DVC_NO_ANALYTICS": "1",
        # no git identity, as on Colab or a fresh laptop: `dvc exp run` failed there ("Git user name and
        # email must be configured"), and the cells after it showed the earlier run as the experiment's
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "home"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel (and its `!dvc …`) inherits this process's environment
    try:
        NotebookClient(
            nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(repo / "notebooks")}}
        ).execute()
        # a cell's stdout may come back in several stream messages, split anywhere (`31`, ` figures …`)
        text = "\n".join("".join(o.get("text", "") for o in c.outputs) for c in nb.cells if c.cell_type == "code")
        assert "command not found" not in text and "ERROR" not in text
        assert "git had no user name or email" in text
        assert "computing hashes" not in text  # DVC's progress bars (140 KB a cell) stay out of the outputs
        assert json.loads((repo / "metrics/train.json").read_text())["epochs"] == 4  # the experiment ran
        assert "train.epochs" in text  # dvc exp show / metrics diff
        # dvc metrics show's numbers, a line each: its table was 480 characters wide
        shown = text[text.find("metrics/eval.json") :][:1500]
        assert re.match(r"metrics/eval.json\n  test_acc +[\d.]+\n", shown), shown
        assert "of an earlier run of this cell removed" in text
        assert "experiments: ['epochs-4']" in text, text[-2000:]
        shown = re.search(r"(\d+) figures in the report", text)
        assert shown and int(shown.group(1)) >= 30, text[-2000:]
        assert "What changed" in (repo / "report/lab_report.html").read_text()  # the report of the experiment
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        shutil.rmtree(repo / "notebooks", ignore_errors=True)
        sh(repo, "git", "checkout", "--", ".")
        sh(repo, "dvc", "checkout", "-q", check=False)
