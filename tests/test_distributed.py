"""One training run on several processes with torchrun + DistributedDataParallel (gloo, CPU):
two processes train and write once; torchrun with one process is exactly plain python; a killed
process fails the stage with one line, Ctrl-C to the whole group saves, and the next run resumes
to the result of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_repo, merge, sh
from tests.test_pipeline import _outputs

DDP = {"train": {"epochs": 12, "threads": None, "nproc": 2}, "model": {"fast_cnn": {"widths": [16, 32, 32]}}}


def _set(repo: Path, over: dict) -> None:
    params = repo / "params.yaml"
    params.write_text(yaml.safe_dump(merge(yaml.safe_load(params.read_text()), over), sort_keys=False))


def _train(repo: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, *(extra or ("-m", "stages.train")), check=check)


@pytest.fixture(scope="module")
def ddp_repo(tmp_path_factory, full_mirror):
    repo = make_repo(tmp_path_factory.mktemp("ddp") / "lab", full_mirror, over=DDP)
    sh(repo, "dvc", "repro", "stats", env_extra={"CIFAR10_MIRROR": str(full_mirror)})
    return repo


def test_two_processes_train_write_once_and_match_one_process(ddp_repo):
    repo = ddp_repo
    out = _train(repo)
    assert "2 processes: torchrun --standalone --nproc_per_node=2 -m stages.train" in out.stdout
    two = json.loads((repo / "metrics/train.json").read_text())
    assert two["processes"] == 2 and two["steps"] == 12 * (180 // 32)
    # rank 0 alone logs: one row per epoch, not one per process
    assert (repo / "dvclive/train/plots/metrics/val/acc.tsv").read_text().count("\n") == 12 + 1
    assert out.stdout.count("train: best val acc") == 1
    _set(repo, {"train": {"nproc": 1}})
    try:
        _train(repo)
        one = json.loads((repo / "metrics/train.json").read_text())
    finally:
        _set(repo, {"train": {"nproc": 2}})
    assert one["processes"] == 1 and one["steps"] == two["steps"]
    # same global batch and schedule; batch-norm statistics per process differ, so within noise
    assert abs(two["best_val_acc"] - one["best_val_acc"]) <= 0.1, (one["best_val_acc"], two["best_val_acc"])


_STEPS = """
import sys, torch
from src.training.distributed import init_from_env
dist, device = init_from_env(torch.device("cpu"))
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
net, opt = dist.wrap(model, device), torch.optim.SGD(model.parameters(), lr=0.1)
g = torch.Generator().manual_seed(1)
for _ in range(3):  # every process draws the same global batch and trains on its slice of it
    x, y = torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)
    loss = (net(dist.shard(x)) - dist.shard(y)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
torch.save(model.state_dict(), f"{sys.argv[1]}/rank{dist.rank}.pt")
dist.close()
"""


def test_two_processes_average_their_gradients_into_the_one_process_step(tmp_path):
    """Dist.wrap and Dist.shard as the loop uses them: two processes, each on half of every global
    batch, end with the same weights as each other and as one process on the whole batch."""
    script = tmp_path / "steps.py"
    script.write_text(_STEPS)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    for n, out in ((2, tmp_path / "two"), (1, tmp_path / "one")):
        out.mkdir()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={n}",
                str(script),
                str(out),
            ],
            check=True,
            env=env,
            capture_output=True,
            timeout=180,
        )
    import torch

    rank0, rank1, one = (
        torch.load(p, weights_only=True)
        for p in (tmp_path / "two/rank0.pt", tmp_path / "two/rank1.pt", tmp_path / "one/rank0.pt")
    )
    for name, w in one.items():
        assert torch.equal(rank0[name], rank1[name]), name  # the processes stay one model
        torch.testing.assert_close(rank0[name], w, rtol=1e-5, atol=1e-6)  # averaged halves = the whole batch
    torch.manual_seed(0)
    init = torch.nn.Linear(8, 16).weight
    assert (one["0.weight"] - init).abs().max() > 1e-3  # the steps moved the weights


def test_torchrun_with_one_process_is_exactly_plain_python(ddp_repo):
    repo = ddp_repo
    _set(repo, {"train": {"nproc": 1}})
    try:
        _train(repo)
        plain = _outputs(repo)
        _train(repo, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "stages.train")
        assert _outputs(repo) == plain
    finally:
        _set(repo, {"train": {"nproc": 2}})


def test_torchrun_by_hand_with_another_count_than_train_nproc_is_one_line(ddp_repo):
    """The checks of the batch and of frozen stages ran for train.nproc: a torchrun started by hand
    with another count is refused in one line (rank 0's), before any training."""
    out = ddp_repo / "metrics/train.json"
    before = out.read_bytes() if out.exists() else None  # the module's earlier tests may have trained
    r = _train(
        ddp_repo, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3", "-m", "stages.train", check=False
    )
    assert r.returncode != 0
    line = "train: error: params.yaml: train.nproc=2, but torchrun started 3 processes; set train.nproc=3"
    assert r.stderr.count(line) == 1, r.stderr[-2000:]
    assert (out.read_bytes() if out.exists() else None) == before


def test_on_a_wrong_count_only_rank_0_exits_on_its_own(monkeypatch):
    """A follower that exited first would make torchrun stop rank 0 before its line (CI saw it):
    followers wait to be stopped, and fail only if nothing stops them."""
    from src.errors import ParamsError
    from src.training.distributed import check_world_size

    waited = []
    monkeypatch.setattr("time.sleep", waited.append)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ParamsError, match="train.nproc=2, but torchrun started 3"):
        check_world_size(2)
    assert waited == []
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(SystemExit) as out:
        check_world_size(2, follower_wait_s=7.0)
    assert out.value.code == 2 and waited == [7.0]
    check_world_size(3)  # the right count: nothing happens
    assert waited == [7.0]


def test_ctrl_c_while_a_follower_waits_leaves_quietly(monkeypatch, capsys):
    """Ctrl-C reaches every process torchrun started; a follower waiting on a wrong count exits 130
    without a KeyboardInterrupt traceback (rank 0 has said what is wrong)."""
    from src.training.distributed import check_world_size

    def ctrl_c(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("time.sleep", ctrl_c)
    for name, value in {"LOCAL_RANK": "1", "WORLD_SIZE": "3", "RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    try:
        check_world_size(2)
    except KeyboardInterrupt:  # caught here: uncaught, it would stop the whole test session
        pytest.fail("the waiting follower let Ctrl-C through (a KeyboardInterrupt traceback)")
    except SystemExit as out:
        assert out.code == 130 and out.__suppress_context__  # no KeyboardInterrupt shown with it
    else:
        pytest.fail("the waiting follower went on after Ctrl-C")
    assert capsys.readouterr() == ("", "")


_LEAVE = """
import atexit, sys
from src.errors import ParamsError
from stages._common import run_stage
atexit.register(lambda: print("teardown ran"))

def main(p):
    print("trained", end="")  # buffered: a pipe is not a terminal
    if sys.argv[1] == "fail":
        raise ParamsError("train.x=1: not allowed")

run_stage("train", main)
"""


@pytest.mark.parametrize("outcome,code", [("ok", 0), ("fail", 2)])
@pytest.mark.parametrize("rank", [None, "0", "1"])
def test_a_torchrun_process_leaves_without_teardown_and_keeps_its_output(tmp_path, outcome, code, rank):
    """libtorch's teardown of gloo's process group at exit aborted a finished process now and then
    (SIGABRT after rank 0 had written everything; CI saw it): a process torchrun started skips the
    teardown, with its exit code and its buffered output kept. A plain process exits as before."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "PYTHONUNBUFFERED")}
    if rank is not None:
        env["RANK"] = rank
    r = subprocess.run(
        [sys.executable, "-c", _LEAVE, outcome],
        cwd=Path(__file__).resolve().parents[1],  # the repo's params.yaml
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == code, r.stderr
    assert r.stdout.startswith("trained")
    assert ("teardown ran" in r.stdout) == (rank is None)
    speaks = rank in (None, "0") and outcome == "fail"
    assert ("train: error: train.x=1: not allowed" in r.stderr) == speaks, r.stderr


def test_torchruns_report_of_a_failed_process_is_one_line():
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from stages._torchrun import failure_line

    failures = {1: ProcessFailure(1, 4321, -9, "<N/A>"), 0: ProcessFailure(0, 4320, 2, "<N/A>")}
    assert failure_line(failures) == "rank 0 (pid 4320) exited with 2; rank 1 (pid 4321) was killed by SIGKILL"
    failures[0] = ProcessFailure(0, 4320, -15, "<N/A>")  # stopped by torchrun after rank 1 died
    assert failure_line(failures) == "rank 1 (pid 4321) was killed by SIGKILL (torchrun stopped the others)"
    failures[0] = ProcessFailure(0, 4320, 3, "<N/A>")  # left because its peer died (Dist.closing)
    assert failure_line(failures) == "rank 1 (pid 4321) was killed by SIGKILL (torchrun stopped the others)"


def test_an_error_rank_0_reported_is_told_from_a_process_that_died():
    """Rank 0 alone validates and saves, so an error there leaves the others as followers (lost
    peer, or stopped by torchrun): the stage's line is enough. A process that died is not."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from src.training.distributed import LOST_PEER_EXIT
    from stages._torchrun import reported_already

    def failures(*codes: int) -> dict:
        return {rank: ProcessFailure(rank, 4320 + rank, code, "<N/A>") for rank, code in enumerate(codes)}

    assert reported_already(failures(2, 2)) and reported_already(failures(2, LOST_PEER_EXIT))
    assert reported_already(failures(2, -15))  # torchrun stopped rank 1 after rank 0's exit
    assert not reported_already(failures(-15, -9)) and not reported_already(failures(1, 2))
    assert not reported_already(failures(LOST_PEER_EXIT, 2))  # rank 1's own error: rank 0 printed nothing


@pytest.mark.parametrize("local,want", [(None, 1), ("2", 1), ("1", 2)], ids=["standalone", "2-here", "1-per-machine"])
def test_the_cores_are_shared_among_this_machines_processes(monkeypatch, capsys, local, want):
    """Two machines with one process each: each process takes its machine's 2 cores (it took 1,
    the cores divided by the processes of every machine)."""
    import stages.train
    from src.training.distributed import Dist
    from tests.conftest import params_with

    monkeypatch.setattr(stages.train, "cpu_threads", lambda p: (2, "the 2 cores this process may use"))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    if local is not None:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert stages.train._threads(params_with({}), Dist(rank=0, world=2)) == want
    here = local or "2"
    assert capsys.readouterr().out == (
        f"train: {want} thread{'s' if want > 1 else ''} per process (the 2 cores this process may use, "
        f"{here} processes on this machine)\n"
    )


def test_only_a_lost_peer_is_quiet():
    """A collective broken by a dead peer exits quietly; NCCL's setup and usage errors keep their message."""
    from src.training.distributed import lost_peer

    gloo = "[../gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:3744: Connection reset by peer."
    assert lost_peer(RuntimeError(gloo))
    # a write to the dead peer, rather than a read, fails this way
    assert lost_peer(RuntimeError("[../gloo/transport/tcp/pair.cc:598] Write error [127.0.0.1]:3744: Broken pipe"))
    assert not lost_peer(RuntimeError("NCCL error: unhandled system error (run with NCCL_DEBUG=INFO for details)"))
    assert not lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def _workers(parent: int) -> dict[int, int]:
    """rank → pid of the training processes below `parent`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (entry / "environ").read_text().split("\0") if "=" in kv)
            chain = [int(entry.name)]
            while chain[-1] > 1 and len(chain) < 6:
                chain.append(int((Path("/proc") / str(chain[-1]) / "stat").read_text().rsplit(")", 1)[1].split()[1]))
        except (OSError, ValueError):
            continue
        if parent in chain[1:] and "RANK" in env and "stages.train" in (entry / "cmdline").read_text():
            found[int(env["RANK"])] = int(entry.name)
    return found


def _start(repo: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=repo,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _after_first_epoch(repo: Path, proc: subprocess.Popen) -> None:
    resume = repo / ".cache/train/resume.pt"
    deadline = time.time() + 180
    while not resume.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)


@pytest.fixture(scope="module")
def uninterrupted(ddp_repo):
    import shutil

    shutil.rmtree(ddp_repo / ".cache", ignore_errors=True)
    _train(ddp_repo)
    return _outputs(ddp_repo)


def test_a_killed_process_fails_the_stage_and_the_next_run_resumes(ddp_repo, uninterrupted):
    repo = ddp_repo
    proc = _start(repo)
    _after_first_epoch(repo, proc)
    pid = _workers(proc.pid)[1]
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 2, err[-2000:]
    assert "train: error: a training process failed (torchrun exited with" in err
    # torchrun's report is one line, not its ChildFailedError traceback and table
    assert f"torchrun: rank 1 (pid {pid}) was killed by SIGKILL" in err and "Traceback" not in err, err[-3000:]
    assert "run the same command again to resume" in err
    again = _train(repo)
    assert "resuming from .cache/train/resume.pt" in again.stdout + again.stderr
    assert _outputs(repo) == uninterrupted


def test_ctrl_c_to_every_process_saves_and_resumes(ddp_repo, uninterrupted):
    repo = ddp_repo
    proc = _start(repo)
    _after_first_epoch(repo, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    assert "train: interrupted: SIGINT" in err and "run the same command again to resume" in err
    assert "Traceback" not in err and "SignalException" not in err, err  # not torchrun's own traceback
    assert (repo / ".cache/train/resume.pt").exists()
    again = _train(repo)
    assert "resuming from .cache/train/resume.pt" in again.stdout + again.stderr
    assert _outputs(repo) == uninterrupted


def test_an_error_every_process_stopped_on_is_its_one_line_alone(ddp_repo):
    """A NaN loss stops both processes with rank 0's line. Under it came torchrun's "rank 0 exited
    with 2; rank 1 exited with 2" and "run the same command again to resume", which fails again."""
    import shutil

    before = (ddp_repo / "params.yaml").read_text()
    try:
        _set(ddp_repo, {"train": {"lr": 1e8, "muon_lr": 1e8, "epochs": 2}})
        r = _train(ddp_repo, check=False)
    finally:
        (ddp_repo / "params.yaml").write_text(before)
        shutil.rmtree(ddp_repo / ".cache", ignore_errors=True)
    errors = [line for line in r.stderr.splitlines() if "error" in line or line.startswith("torchrun:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-3000:]
    assert errors[0].startswith("train: error: the training loss became ") and "train.lr" in errors[0], errors


def test_a_failure_before_any_epoch_ended_says_there_is_no_resume_point(monkeypatch, tmp_path):
    import stages._parallel
    from src.errors import DistributedFailure, ReportedFailure

    monkeypatch.chdir(tmp_path)  # no .cache/train/resume.pt here
    for code, raised in ((1, DistributedFailure), (2, ReportedFailure)):
        monkeypatch.setattr("subprocess.Popen", lambda *a, code=code, **k: type("P", (), {"wait": lambda self: code})())
        with pytest.raises(raised) as e:
            stages._parallel.run_under_torchrun("train", 2)
    with pytest.raises(DistributedFailure) as e:
        monkeypatch.setattr("subprocess.Popen", lambda *a, **k: type("P", (), {"wait": lambda self: 1})())
        stages._parallel.run_under_torchrun("train", 2)
    assert str(e.value).endswith("; no epoch had ended: the next run starts afresh") and not e.value.resumable
