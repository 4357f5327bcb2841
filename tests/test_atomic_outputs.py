"""A stage that fails halfway leaves the last run's files whole: folders of figures are drawn into a
temporary folder that replaces the old one only on success, and a missing or damaged input of the
visualize stage is one line naming the stage to rerun."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from src.errors import DataError
from src.io import atomic_dir, kept_if_failed
from src.models import build_model
from src.teach.probe import fingerprint, read_responses
from tests.conftest import REPO, params_with


def test_a_folder_is_replaced_whole_only_on_success(tmp_path):
    out = tmp_path / "plots" / "visualize"
    with atomic_dir(out) as d:
        (d / "a.png").write_bytes(b"first")
        (d / "feature_maps_cat_1.png").write_bytes(b"first")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "feature_maps_cat_1.png"]
    with pytest.raises(RuntimeError), atomic_dir(out) as d:
        (d / "a.png").write_bytes(b"half")
        raise RuntimeError("a figure failed")
    assert (out / "a.png").read_bytes() == b"first" and len(list(out.iterdir())) == 2
    with atomic_dir(out) as d:  # a run for other classes: the old class's files go
        (d / "a.png").write_bytes(b"second")
    assert [p.name for p in out.iterdir()] == ["a.png"] and (out / "a.png").read_bytes() == b"second"
    assert sorted(p.name for p in out.parent.iterdir()) == ["visualize"]  # no temporary folders left
    assert out.stat().st_mode & 0o755 == 0o755  # the usual modes, not mkdtemp's 0700


def test_what_a_killed_run_left_is_cleared_by_the_next_run(tmp_path):
    """SIGKILL skips the cleanup: the next run removes the hidden folders of its own folder only
    (not those of `train.v2`, whose name starts the same), and puts the last run's folder back
    where a swap was cut between its two renames."""
    out = tmp_path / "dvclive" / "train"
    out.mkdir(parents=True)
    names = (".train.k1ll3d_x.tmp", ".train.v2.abcdefgh.tmp", ".other.b2c3d4e5.tmp", ".train.v2")
    for name in names:
        (out.parent / name).mkdir()
    with atomic_dir(out) as d:
        (d / "metrics.json").write_text("{}")
    left = sorted(p.name for p in out.parent.iterdir())
    assert left == [".other.b2c3d4e5.tmp", ".train.v2", ".train.v2.abcdefgh.tmp", "train"], left
    # killed between moving the last run's folder aside and moving the new one in
    shutil.rmtree(out)
    (out.parent / ".train.zz99yy88.tmp.old").mkdir()
    (out.parent / ".train.zz99yy88.tmp.old" / "metrics.json").write_text("last run")
    with pytest.raises(RuntimeError), atomic_dir(out):
        raise RuntimeError("this run fails too")
    assert (out / "metrics.json").read_text() == "last run"


def test_a_folder_written_in_place_gets_the_last_runs_back_when_the_run_fails(tmp_path):
    """DVCLive writes dvclive/train as the epochs end (so live plots can follow it); a run that
    fails puts the last run's folder back, a run that ends well keeps its own."""
    out = tmp_path / "dvclive" / "train"
    with kept_if_failed(out) as d:
        d.mkdir()
        (d / "acc.tsv").write_text("first")
    with pytest.raises(RuntimeError), kept_if_failed(out) as d:
        d.mkdir()
        (d / "acc.tsv").write_text("half")
        assert not (tmp_path / "dvclive" / "train" / "metrics.json").exists()  # written in place, from empty
        raise RuntimeError("the loss became nan")
    assert (out / "acc.tsv").read_text() == "first"
    with kept_if_failed(out) as d:
        d.mkdir()
        (d / "acc.tsv").write_text("second")
    assert (out / "acc.tsv").read_text() == "second"
    assert sorted(p.name for p in out.parent.iterdir()) == ["train"]  # no hidden folder left
    # a run killed with its backup taken: the next run finds the last run's folder and keeps it
    backup = out.parent / ".train.k1ll3d00.tmp"
    backup.mkdir()
    os.replace(out, backup / "train")
    with pytest.raises(RuntimeError), kept_if_failed(out):
        raise RuntimeError("fails before writing")
    assert (out / "acc.tsv").read_text() == "second" and sorted(p.name for p in out.parent.iterdir()) == ["train"]


def test_a_linked_folder_keeps_its_link_and_gets_the_new_files(tmp_path):
    real, link = tmp_path / "elsewhere" / "visualize", tmp_path / "plots" / "visualize"
    real.mkdir(parents=True)
    (real / "old.png").write_bytes(b"old")
    link.parent.mkdir()
    link.symlink_to(real, target_is_directory=True)
    with atomic_dir(link) as d:
        (d / "new.png").write_bytes(b"new")
    assert link.is_symlink() and [p.name for p in link.iterdir()] == ["new.png"]
    assert sorted(p.name for p in real.parent.iterdir()) == ["visualize"]  # nothing left beside it
    assert [p.name for p in link.parent.iterdir()] == ["visualize"]


def _refuse_rename(monkeypatch, refuse, code: int) -> None:
    """os.replace raising OSError(code) for the renames `refuse(src, dst)` picks (paths as str)."""
    rename = os.replace

    def replace(src, dst):
        src, dst = os.fspath(src), os.fspath(dst)
        if refuse(src, dst):
            raise OSError(code, os.strerror(code), src)
        rename(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_a_folder_that_cannot_be_moved_is_filled_in_place(tmp_path, monkeypatch):
    """A mount point (a container's volume on plots/) cannot be renamed (EBUSY): its contents are
    replaced instead, and nothing is left beside it."""
    out = tmp_path / "plots" / "visualize"
    (out / "old_sub").mkdir(parents=True)
    (out / "old.png").write_bytes(b"old")
    _refuse_rename(monkeypatch, lambda src, dst: src == os.fspath(out), errno.EBUSY)
    with atomic_dir(out) as d:
        (d / "new.png").write_bytes(b"new")
        (d / "sub").mkdir()
        (d / "sub" / "x.png").write_bytes(b"x")
    assert sorted(p.name for p in out.iterdir()) == ["new.png", "sub"] and (out / "sub" / "x.png").exists()
    assert [p.name for p in out.parent.iterdir()] == ["visualize"]


@pytest.mark.parametrize("fails", ["copy", "moving in"])
def test_a_folder_that_cannot_be_moved_keeps_its_files_when_the_swap_fails(tmp_path, monkeypatch, fails):
    """Filled in place, a mount point still keeps the last run's files whole when the new ones
    cannot be written (a full volume halfway through the copy) or moved in: the error is raised,
    the old entries are back, and no hidden folder or new file is left."""
    out = tmp_path / "plots" / "visualize"
    (out / "old_sub").mkdir(parents=True)
    (out / "old_sub" / "y.png").write_bytes(b"y")
    (out / "old.png").write_bytes(b"old")
    if fails == "copy":
        move, copied = shutil.move, []

        def full_volume(src, dst):
            if copied:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)
            copied.append(move(src, dst))

        monkeypatch.setattr(shutil, "move", full_volume)
        refuse = lambda src, dst: src == os.fspath(out)  # noqa: E731
    else:
        refuse = lambda src, dst: src == os.fspath(out) or dst == os.fspath(out / "b.png")  # noqa: E731
    _refuse_rename(monkeypatch, refuse, errno.EBUSY)
    with pytest.raises(OSError), atomic_dir(out) as d:
        for name in ("a.png", "b.png", "c.png"):
            (d / name).write_bytes(b"new")
    assert sorted(p.name for p in out.iterdir()) == ["old.png", "old_sub"]
    assert (out / "old.png").read_bytes() == b"old" and (out / "old_sub" / "y.png").read_bytes() == b"y"
    assert [p.name for p in out.parent.iterdir()] == ["visualize"]


def test_a_failed_swap_whose_undo_fails_too_keeps_the_old_files_aside(tmp_path, monkeypatch):
    """If moving an old entry back fails as well, it stays in the hidden folder, which the error
    names, and the other old entries are put back: nothing of the last run is deleted."""
    out = tmp_path / "plots" / "visualize"
    out.mkdir(parents=True)
    for name in ("old1.png", "old2.png"):
        (out / name).write_bytes(name.encode())

    def refuse(src, dst):
        return src == os.fspath(out) or dst == os.fspath(out / "b.png") or dst == os.fspath(out / "old1.png")

    _refuse_rename(monkeypatch, refuse, errno.EBUSY)
    with pytest.raises(OSError) as err, atomic_dir(out) as d:
        for name in ("a.png", "b.png"):
            (d / name).write_bytes(b"new")
    aside = [p for p in out.iterdir() if p.name.startswith(".old.")]
    assert len(aside) == 1 and [p.name for p in aside[0].iterdir()] == ["old1.png"]
    assert err.value.__notes__ == [f"the last run's files that could not be put back are in {aside[0]}"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["old2.png"]


@pytest.mark.parametrize("fails", [".new.", ".old."])
def test_a_full_volume_before_the_swap_leaves_no_hidden_folder(tmp_path, monkeypatch, fails):
    """Either hidden folder failing to be made (a full volume) raises that error, not another."""
    out = tmp_path / "plots" / "visualize"
    out.mkdir(parents=True)
    (out / "old.png").write_bytes(b"old")
    _refuse_rename(monkeypatch, lambda src, dst: src == os.fspath(out), errno.EBUSY)
    mkdtemp = tempfile.mkdtemp

    def full(**kw):
        if kw.get("prefix") == fails:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return mkdtemp(**kw)

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    with pytest.raises(OSError, match="No space left"), atomic_dir(out) as d:
        (d / "new.png").write_bytes(b"new")
    assert [p.name for p in out.iterdir()] == ["old.png"]


@pytest.mark.parametrize("fails", ["old folder out", "new folder in"])
def test_a_rename_that_fails_otherwise_keeps_the_last_runs_files(tmp_path, monkeypatch, fails):
    """Only a folder that cannot be moved (EBUSY) is filled in place; any other failure of either
    rename is raised with the last run's files where they were, nothing left beside them."""
    out = tmp_path / "plots" / "visualize"
    out.mkdir(parents=True)
    (out / "old.png").write_bytes(b"old")
    refuse = {
        "old folder out": lambda src, dst: src == os.fspath(out),
        # the new folder moving in, not the .old folder moving back
        "new folder in": lambda src, dst: dst == os.fspath(out) and src.endswith(".tmp"),
    }[fails]
    _refuse_rename(monkeypatch, refuse, errno.EACCES)
    with pytest.raises(PermissionError), atomic_dir(out) as d:
        (d / "new.png").write_bytes(b"new")
    assert [p.name for p in out.iterdir()] == ["old.png"] and (out / "old.png").read_bytes() == b"old"
    assert [p.name for p in out.parent.iterdir()] == ["visualize"]


def test_the_recorded_responses_are_read_or_refused_in_one_line(tmp_path):
    model = build_model(params_with({}).model, 3).eval()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    path = tmp_path / "test_responses.pt"
    with pytest.raises(DataError, match=r"test_responses.pt: missing; run dvc repro evaluate$"):
        read_responses(path, model, x)
    torch.save({"fingerprint": fingerprint(model, x), "top": 1}, path)
    assert read_responses(path, model, x)["top"] == 1
    path.write_bytes(path.read_bytes()[:100])  # cut short
    with pytest.raises(DataError, match=r"test_responses.pt: unreadable \(\w+\); run dvc repro evaluate$"):
        read_responses(path, model, x)
    torch.save({"fingerprint": fingerprint(model, x[:2]), "top": 1}, path)
    with pytest.raises(DataError, match="not this model's responses on this test split; run dvc repro evaluate"):
        read_responses(path, model, x)


def test_a_file_or_folder_in_the_way_of_an_output_is_one_line_and_leaves_nothing(tmp_path):
    """A file where an output's folder should be gave a FileExistsError traceback from `mkdir`, and
    a folder where an output file should be an IsADirectoryError from the rename."""
    from src.errors import OutputError
    from src.io import write_json

    (tmp_path / "plots").write_text("not a folder")
    with pytest.raises(OutputError, match=r"^cannot write .*plots/data/x\.json: .*plots is a file, not a folder; move"):
        write_json(tmp_path / "plots/data/x.json", {"a": 1})
    (tmp_path / "metrics/stats.json").mkdir(parents=True)
    with pytest.raises(OutputError, match=r"stats\.json: a folder of that name is in the way; move or delete it$"):
        write_json(tmp_path / "metrics/stats.json", {"a": 1})
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["stats.json"]  # no temporary file left


@pytest.mark.parametrize("stage", ["check", "download", "stats", "train", "evaluate", "visualize", "theory"])
def test_a_stage_whose_output_folder_is_a_file_says_so_before_any_work(tmp_path, stage):
    """Run by hand, the stats stage wrote data/subset.pt and then failed with a traceback on
    plots/data being a file. Each stage now checks its dvc.yaml outputs first: one line, exit 2,
    nothing written (`dvc repro` finds this itself)."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    declared = [o for k in ("outs", "metrics", "plots") for o in spec.get(k) or ()]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in declared]
    # the last output inside a folder: a file there instead (stats wrote data/subset.pt, then met plots)
    top = Path([o for o in outs if "/" in o][-1]).parts[0]
    (tmp_path / top).write_text("in the way")
    env = {**os.environ, "PYTHONPATH": str(REPO), "CIFAR10_MIRROR": str(tmp_path / "none")}
    r = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    line = rf"{stage}: error: cannot write {top}/\S+: {top} is a file, not a folder; move or delete it\n"
    assert re.fullmatch(line, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dvc.yaml", "params.yaml", top])


@pytest.mark.parametrize(
    ("stage", "out", "what"),
    [
        ("train", "dvclive/train", "file"),  # DVCLive met it with a traceback after the data loaded
        ("visualize", "plots/visualize", "file"),
        ("evaluate", "metrics/eval.json", "folder"),  # found only at the rename, after the test pass
    ],
)
def test_a_file_where_a_recorded_folder_goes_or_the_reverse_is_one_line_before_any_work(tmp_path, stage, out, what):
    """dvc.lock says which outputs the last run wrote as folders (their hash ends in .dir): a file
    of that name, or a folder where a file went, is named before any work, as a blocked parent is."""
    for name in ("dvc.yaml", "params.yaml", "dvc.lock"):
        shutil.copy(REPO / name, tmp_path / name)
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    recorded = {o["path"]: o["md5"] for o in lock["stages"][stage]["outs"]}
    assert recorded[out].endswith(".dir") == (what == "file")  # the lock says the opposite of what is there
    target = tmp_path / out
    target.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir() if what == "folder" else target.write_text("in the way")
    env = {**os.environ, "PYTHONPATH": str(REPO), "CIFAR10_MIRROR": str(tmp_path / "none")}
    r = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    expected = (
        f"cannot write the folder {out}: a file of that name is in the way; move or delete it"
        if what == "file"
        else f"cannot write {out}: a folder of that name is in the way; move or delete it"
    )
    assert r.stderr == f"{stage}: error: {expected}\n"
    # without dvc.lock (a fresh clone before its first run) nothing says what the output was: no check
    from src.io import output_problem

    assert output_problem(target) is None


def test_a_dvc_yaml_or_lock_of_another_shape_is_no_reason_to_refuse(tmp_path):
    """check_outputs reads dvc.yaml and dvc.lock only to warn early: stages written as a list, or a
    lock of another shape, leave the stage to run (DVC itself says what is wrong with them)."""
    from stages._common import check_outputs

    (tmp_path / "dvc.yaml").write_text("stages:\n  - train\n")
    check_outputs("train", tmp_path / "dvc.yaml")
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    outs: [dvclive/train]\n")
    for lock in ("stages: [1, 2]\n", "stages:\n  train: 3\n", "stages:\n  train:\n    outs: [a, {path: 1}]\n", ": :"):
        (tmp_path / "dvc.lock").write_text(lock)
        check_outputs("train", tmp_path / "dvc.yaml")
