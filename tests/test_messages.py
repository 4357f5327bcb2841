"""Messages repeat the command the user actually ran (stages/_launcher.py finds it among the
stage's parent processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stages._common import _undo_hint
from tests.conftest import REPO

PRINT = "from stages._launcher import launching_command; print(launching_command())"


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "args,expect",
    [
        (["exp", "run", "-S", "train.epochs=20"], "dvc exp run -S train.epochs=20"),
        (["repro", "train"], "dvc repro train"),
        (["exp", "run", "-S", "data.classes=[cat, dog]"], "dvc exp run -S 'data.classes=[cat, dog]'"),
        (["exp", "queue-worker", "dvc-exp-worker-1"], "None"),
    ],
)
def test_the_dvc_command_above_the_stage_is_found(tmp_path, args, expect):
    fake = tmp_path / "dvc"  # stands where DVC would: the stage's parent process
    fake.write_text(f'#!/bin/sh\n"{sys.executable}" -c "{PRINT}"\n')
    fake.chmod(0o755)
    out = subprocess.run([str(fake), *args], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expect


def test_a_stage_run_by_hand_names_its_module(tmp_path):
    """`python -m <module> args` as the user typed it (a stage's own messages repeat it); a script
    run without -m as `python <argv>`."""
    (tmp_path / "probe_stage.py").write_text(PRINT + "\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    for args, expect in (
        (["-m", "probe_stage", "--seed", "3"], "python -m probe_stage --seed 3"),
        (["-c", f"import sys; sys.argv=['x']; {PRINT}"], "python x"),
    ):
        out = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expect


def test_a_bad_value_from_exp_run_set_says_how_to_undo_it():
    back = "`git read-tree HEAD && git checkout -- params.yaml && dvc checkout` restores the committed params.yaml"
    assert back in _undo_hint("dvc exp run -S 'data.classes=[cat,dgo]'")
    assert back in _undo_hint("dvc exp run --set-param train.lr=-1")
    assert _undo_hint("dvc repro") == "" and _undo_hint(None) == ""


def test_a_stage_shares_the_cores_with_the_queue_workers_or_takes_train_threads(monkeypatch):
    """share_of_cores, torch-free, so the theory stage can ask before it imports torch whether a
    forked child may draw its worked examples: with train.threads 1 (or a queue's one-core share) the
    stage used a second core anyway."""
    import stages.theory
    from stages import _launcher
    from tests.conftest import params_with

    monkeypatch.setattr(_launcher, "launching_command", lambda: None)  # run by DVC's queue
    monkeypatch.setattr(_launcher, "queue_workers", lambda: 3)
    assert _launcher.share_of_cores(None, 4) == (1, "4 cores shared by 3 queue workers")
    assert _launcher.share_of_cores(2, 4) == (2, "train.threads")
    monkeypatch.setattr(_launcher, "queue_workers", lambda: 0)
    assert _launcher.share_of_cores(None, 4) == (4, "the 4 cores this process may use")
    seen = []

    def forked(work, name, threads):
        seen.append(threads)
        raise KeyboardInterrupt  # stop before the stage reads its data

    monkeypatch.setattr(stages.theory, "forked", forked)
    for threads in (1, 2):
        with pytest.raises(KeyboardInterrupt):
            stages.theory.main(params_with({"train": {"threads": threads}}))
    assert seen == [1, 2]
