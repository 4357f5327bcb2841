"""The GitHub workflows and the repo's habits: actionlint passes on .github/workflows and fails on a
broken copy, shellcheck likewise on the shell scripts; the test workflow, .ci/run and pre-commit run
the same checks; the code is clean under ruff (lint and format) as pyproject.toml sets it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A tool requirements-dev.txt installs into this venv (a missing one fails: the checks are not optional)."""
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} not found: pip install -r requirements-dev.txt"
    return path


def actionlint(folder: Path) -> subprocess.CompletedProcess:
    files = sorted(str(p) for p in folder.glob("*.yml"))
    return subprocess.run([tool("actionlint"), "-no-color", *files], capture_output=True, text=True, timeout=120)


def test_actionlint_passes_on_the_workflows():
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == ["review.yml", "tests.yml"]
    r = actionlint(WORKFLOWS)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("cancel-in-progress: true", "cancel-in-progress: maybe", "cancel-in-progress"),  # a bad value
        ("${{ github.base_ref }}", "${{ github.base_reff }}", "base_reff"),  # a context property that does not exist
        ("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", "runs_on"),  # a misspelt key
    ],
)
def test_actionlint_fails_on_a_broken_copy(tmp_path, old, new, message):
    for p in WORKFLOWS.glob("*.yml"):
        shutil.copy(p, tmp_path / p.name)
    target = tmp_path / ("review.yml" if "base_ref" in old else "tests.yml")
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    r = actionlint(tmp_path)
    assert r.returncode == 1 and message in r.stdout, r.stdout + r.stderr
    assert target.name in r.stdout


SHELLCHECK = "shellcheck .ci/run benchmarks/*.sh"  # as .ci/run and the test workflow run it


def shellcheck(files: list[Path]) -> subprocess.CompletedProcess:
    cmd = [tool("shellcheck"), "-f", "gcc", *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_shellcheck_passes_on_every_shell_script_and_fails_on_a_broken_copy(tmp_path):
    """Every script the repo tracks (a shebang naming sh or bash) is one the checks name; the GPU
    script has never run on a GPU, so this is what catches its quoting and unset variables first."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    scripts = [REPO / f for f in tracked if (REPO / f).is_file() and _shebang(REPO / f)]
    named = [REPO / ".ci" / "run", *sorted((REPO / "benchmarks").glob("*.sh"))]
    assert sorted(scripts) == sorted(named) and REPO / "benchmarks" / "gpu_all.sh" in named
    r = shellcheck(named)
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "gpu_all.sh"
    text = (REPO / "benchmarks" / "gpu_all.sh").read_text()
    broken.write_text(text + '\nfor f in $(ls "$OUT"); do cp $f "$OUT/copy"; done\n')  # word splitting
    r = shellcheck([broken])
    assert r.returncode == 1 and "SC2045" in r.stdout and "SC2086" in r.stdout, r.stdout


def _shebang(path: Path) -> bool:
    with path.open("rb") as f:
        first = f.readline(200)
    return first.startswith(b"#!") and any(s in first for s in (b"bash", b"/sh"))


def _steps(name: str) -> str:
    wf = yaml.safe_load((WORKFLOWS / name).read_text())
    return "\n".join(s.get("run", "") + s.get("uses", "") for job in wf["jobs"].values() for s in job["steps"])


def test_the_test_workflow_and_ci_run_the_same_checks():
    ci = (REPO / ".ci" / "run").read_text()
    tests = _steps("tests.yml")
    checks = ["ruff check .", "ruff format --check .", "actionlint", SHELLCHECK, "nbstripout --verify"]
    for check in [*checks, "python -m pytest -q"]:
        assert check in ci and check in tests, check
    assert "download.pytorch.org/whl/cpu" in tests and "pip install -r requirements-dev.txt" in tests
    assert "pip install -q -r requirements-dev.txt" in ci
    wf = yaml.safe_load((WORKFLOWS / "tests.yml").read_text())
    assert set(wf[True]) == {"push", "pull_request"}  # YAML 1.1 reads `on` as True
    # every Python the README promises (3.10-3.12) and pyproject.toml allows
    assert wf["jobs"]["tests"]["strategy"]["matrix"]["python-version"] == ["3.10", "3.11", "3.12"]
    assert "Python 3.10–3.12" in (REPO / "README.md").read_text()
    assert 'requires-python = ">=3.10"' in (REPO / "pyproject.toml").read_text()


def test_the_review_workflow_follows_the_cml_convention():
    wf = yaml.safe_load((WORKFLOWS / "review.yml").read_text())
    assert wf[True] == {"pull_request": None, "push": {"branches": ["main"]}}
    # the comment's write permission on the review job only, not on the job that downloads CIFAR-10
    assert wf["permissions"] == {"contents": "read"}
    assert wf["jobs"]["review"]["permissions"] == {"contents": "read", "pull-requests": "write"}
    # a step's timeout fails the step, so the failure steps still post; the job's timeout would cancel them
    repro = next(s for s in wf["jobs"]["review"]["steps"] if "dvc repro" in s.get("run", ""))
    assert repro["timeout-minutes"] < wf["jobs"]["review"]["timeout-minutes"]
    steps = _steps("review.yml")
    assert "iterative/setup-cml" in steps
    assert "dvc pull" in steps and "dvc repro" in steps
    assert 'python -m src.review "origin/${{ github.base_ref }}" workspace --out review' in steps
    assert "cml comment update --publish" in steps and "review/review.md" in steps  # one comment, updated
    review = wf["jobs"]["review"]
    # on PRs only, and also when the cifar10 job's one download failed (the download stage then fetches it)
    assert review["if"] == "${{ !cancelled() && github.event_name == 'pull_request' }}" and review["needs"] == "cifar10"
    post = next(s for s in review["steps"] if "cml comment" in s.get("run", ""))
    # a fork's PR gets a read-only token: its review goes to the job summary, and the comment is skipped
    assert post["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    assert '>> "$GITHUB_STEP_SUMMARY"' in steps


@pytest.mark.parametrize("log", ["check", "none", "traceback"])
def test_a_failed_run_posts_its_error_lines_in_the_same_comment(tmp_path, log):
    """A PR whose run fails (a misspelt class) got a red X and no comment. The failure steps write
    the run's error lines (or, before dvc repro, where to look) as the review and post them with the
    review's watermark; the script runs here under the runner's bash flags."""
    job = yaml.safe_load((WORKFLOWS / "review.yml").read_text())["jobs"]["review"]
    # `shell: bash` named: the runner then runs `bash --noprofile --norc -eo pipefail {0}`; unnamed it
    # is `bash -e {0}`, and `dvc repro | tee run.log` passed with a failed dvc repro
    assert job["defaults"]["run"]["shell"] == "bash"
    review = job["steps"]
    write, post = (s for s in review if str(s.get("if", "")).startswith("failure()"))
    assert write["if"] == "failure() && steps.post.outcome != 'failure'"  # a failed post keeps its review
    assert post["if"].startswith(write["if"] + " && ") and "secrets.GITHUB_TOKEN" in post["env"]["REPO_TOKEN"]
    (posting,) = (s for s in review if s.get("id"))
    assert posting["id"] == "post" and "cml comment update --publish" in posting["run"]
    assert post["run"] == 'cml comment update --watermark-title="cifar-cnn-lab review" review/review.md'
    assert "dvc repro 2>&1 | tee run.log" in _steps("review.yml")
    if log == "check":  # the repro step itself, with a dvc whose repro fails: the step fails, its lines logged
        repro = next(s for s in review if "dvc repro 2>&1" in s.get("run", ""))
        (tmp_path / "bin").mkdir()
        fake = tmp_path / "bin" / "dvc"
        fake.write_text('#!/bin/sh\n[ "$1" = repro ] || exit 0\necho "check: error: params.yaml: bad"\nexit 2\n')
        fake.chmod(0o755)
        env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
        runner = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]  # GitHub's for `shell: bash`
        r = subprocess.run([*runner, repro["run"]], cwd=tmp_path, env=env)
        assert r.returncode == 2 and (tmp_path / "run.log").read_text() == "check: error: params.yaml: bad\n"
        r = subprocess.run(["bash", "-e", "-c", repro["run"]], cwd=tmp_path, env=env)  # the unnamed shell's flags
        assert r.returncode == 0  # why the job names its shell
        (tmp_path / "run.log").write_text(
            "Running stage 'check':\n> python -m stages.check\ncheck: error: params.yaml: data.classes: 'dgo' is "
            "not a CIFAR-10 class (did you mean 'dog'?)\nERROR: failed to reproduce 'check': failed to run: "
            "python -m stages.check, exited with 2\n"
        )
    if log == "traceback":  # an uncaught exception: its last line was left out, only DVC's ERROR kept
        (tmp_path / "run.log").write_text(
            "Running stage 'train':\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
            "RuntimeError: mat1 and mat2 shapes cannot be multiplied\nERROR: failed to reproduce 'train'\n"
        )
    summary = tmp_path / "summary.md"
    env = {"PATH": "/usr/bin:/bin", "GITHUB_STEP_SUMMARY": str(summary)}
    r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", write["run"]], cwd=tmp_path, env=env)
    assert r.returncode == 0
    md = (tmp_path / "review/review.md").read_text()
    assert md.startswith("## Review: the pipeline did not finish") and summary.read_text() == md
    if log == "check":
        assert "check: error: params.yaml: data.classes: 'dgo' is not a CIFAR-10 class" in md
        assert "ERROR: failed to reproduce 'check'" in md and "Running stage" not in md
    elif log == "traceback":
        assert "RuntimeError: mat1 and mat2 shapes cannot be multiplied" in md and "ERROR: failed" in md
    else:
        assert "stopped before `dvc repro`" in md


def test_cifar10_is_cached_for_every_pull_request_by_the_archives_md5():
    """A PR restores only its own caches and main's: the cache is filled on pushes to main, keyed by
    params.yaml's md5 (not by source files), and handed to the download stage as CIFAR10_MIRROR."""
    wf = yaml.safe_load((WORKFLOWS / "review.yml").read_text())
    job = wf["jobs"]["cifar10"]
    assert "if" not in job  # runs on pushes to main as well as on PRs
    key = next(s for s in job["steps"] if s.get("id") == "key")["run"]
    assert '["download"]["md5"]' in key and "hashFiles" not in yaml.safe_dump(wf)
    cache = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"] == {"path": "~/cifar10", "key": "${{ steps.key.outputs.key }}"}
    fetch = next(s for s in job["steps"] if "curl" in s.get("run", ""))
    assert fetch["if"] == "steps.cache.outputs.cache-hit != 'true'" and "md5sum -c" in fetch["run"]
    restore = next(s for s in wf["jobs"]["review"]["steps"] if s.get("uses", "").startswith("actions/cache/restore"))
    assert restore["with"] == {"path": "~/cifar10", "key": "${{ needs.cifar10.outputs.key }}"}
    repro = next(s for s in wf["jobs"]["review"]["steps"] if "dvc repro" in s.get("run", ""))["run"]
    assert 'export CIFAR10_MIRROR="$archive"' in repro and "cifar-10-python.tar.gz" in repro


def test_pre_commit_runs_ruff_actionlint_shellcheck_and_the_notebook_stripper():
    r = subprocess.run(
        [tool("pre-commit"), "validate-config", str(REPO / ".pre-commit-config.yaml")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    hooks = {
        h["id"]
        for repo in yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())["repos"]
        for h in repo["hooks"]
    }
    assert hooks == {"ruff-check", "ruff-format", "nbstripout", "actionlint", "shellcheck"}


def test_the_code_is_clean_under_ruff():
    for args in (["check", "."], ["format", "--check", "."]):
        r = subprocess.run([tool("ruff"), *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"ruff {' '.join(args)}:\n{r.stdout}{r.stderr}"
