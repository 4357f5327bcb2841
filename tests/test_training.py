"""The training loop: schedule, learning, resume, NaN, time budget — on tiny synthetic data, CPU."""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from src.errors import NonFiniteLoss, TrainingInterrupted
from src.models import build_model
from src.training.checkpoints import load_checkpoint
from src.training.loop import FitConfig, RunState, TimeBudget, fit, init_from_data
from src.training.optim import cycle_momentum, one_cycle
from src.training.runtime import is_glibc
from tests.conftest import REPO, params_with, synthetic_images


def tiny_data(n_train=240, n_val=60, classes=3, seed=0):
    def make(n, s):
        y = np.arange(n) % classes
        x = synthetic_images(y, s).reshape(n, 3, 32, 32)
        return torch.from_numpy(x), torch.from_numpy(y).long()

    return (*make(n_train, seed), *make(n_val, seed + 1))


def params(augment: dict | None = None, **train):
    t = {"epochs": 3, "batch_size": 32, "lr": 0.02, "threads": 1, **train}
    return params_with(
        {"train": t, "augment": augment or {}, "model": {"name": "fast_cnn", "fast_cnn": {"widths": [8, 16, 16]}}}
    )


def mean_std():
    """The normalisation every fit here uses (the synthetic images' rough channel statistics)."""
    return torch.tensor([0.5] * 3), torch.tensor([0.25] * 3)


def model_from_data(p, train_x):
    """The model `p` names, its first layer set from `train_x` as the train stage sets it."""
    model = build_model(p.model, 3)
    init_from_data(model, train_x, *mean_std())
    return model


def run(tmp_path, p, model=None, flag=None, data=None, on_epoch=None, log=None):
    tx, ty, vx, vy = data or tiny_data()
    mean, std = mean_std()
    torch.manual_seed(p.train.seed)
    if model is None:
        model = model_from_data(p, tx)
    cfg = FitConfig(
        train=p.train,
        augment=p.augment,
        run_dir=tmp_path / "run",
        fingerprint="fp",
        meta={"model_name": p.model.name, "classes": ["a", "b", "c"]},
        progress=False,
        log=log or (lambda s: None),
        on_epoch=on_epoch,
    )
    return fit(model, (tx, ty), (vx, vy), mean, std, torch.device("cpu"), cfg, flag), model


@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_matches_torch(anneal):
    total, peak = 57, 0.3
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=peak, total_steps=total, pct_start=0.3, anneal_strategy=anneal, div_factor=25, final_div_factor=1e4
    )
    for s in range(total):
        assert one_cycle(s, total, peak, 0.3, 25, 1e4, anneal) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        assert cycle_momentum(s, total, 0.3, anneal=anneal) == pytest.approx(opt.param_groups[0]["momentum"], rel=1e-9)
        opt.step()
        sched.step()


def test_a_few_epochs_learn(tmp_path):
    res, _ = run(tmp_path, params(epochs=4))
    h = res.history
    assert h[-1]["train_loss"] < h[0]["train_loss"] - 0.1
    assert h[-1]["val_acc"] > 0.9  # the synthetic classes are easy
    assert res.best_val_acc == max(r["val_acc"] for r in h)
    assert res.steps == 4 * (240 // 32)


def test_a_run_too_short_to_learn_says_so():
    """A quick try (`-S train.epochs=1` on a small subset: a step or two) trained to chance with no word why."""
    notes = {}
    for epochs in (2, 3):  # 14 and 21 steps: the tiny data's epoch is 7
        logs: list[str] = []
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp), params(epochs=epochs), log=logs.append)
        notes[epochs] = [line for line in logs if line.startswith("train: note: ")]
    want = "train: note: 14 optimizer steps in all (2 epochs of 7 steps): the one-cycle schedule warms up and cools"
    assert len(notes[2]) == 1 and notes[2][0].startswith(want) and notes[3] == []


def test_training_says_which_trained_convs_muon_leaves_to_sgd(tmp_path):
    """It spoke only when Muon took no conv: a trained whitening layer (no BatchNorm after it) went
    to SGD in silence. The default, whose whitening layer is frozen, says nothing."""
    notes = {}
    for trainable in (False, True):
        logs: list[str] = []
        p = params(epochs=3, optimizer="muon")
        p = p.model_copy(
            update={
                "model": params_with(
                    {"model": {"fast_cnn": {"widths": [8, 16, 16], "whiten_trainable": trainable}}}
                ).model
            }
        )
        run(tmp_path / str(trainable), p, log=logs.append)
        notes[trainable] = [line for line in logs if "Muon" in line]
    assert notes[False] == []
    assert notes[True] == [
        "train: note: Muon trains 6 of the 7 trained convs, those a BatchNorm takes the output of; SGD trains the "
        "others (whiten)"
    ]


def test_best_pt_holds_the_epoch_with_the_best_validation_accuracy(tmp_path, monkeypatch):
    """Not the last epoch: validation accuracy that falls after epoch 1 leaves epoch 1's weights."""
    import src.training.loop as loop

    scripted, seen = iter([0.9, 0.5, 0.7]), []

    def evaluate(model, *args, **kwargs):
        out = real(model, *args, **kwargs)
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {**out, "acc": next(scripted)}

    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", evaluate)
    res, _ = run(tmp_path, params(epochs=3))
    assert (res.best_epoch, res.best_val_acc) == (1, 0.9)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert (best["epoch"], best["val_acc"]) == (1, 0.9)
    assert all(torch.equal(best["model"][k], seen[0][k]) for k in seen[0])
    assert not all(torch.equal(best["model"][k], seen[-1][k]) for k in seen[-1])  # the last epoch's differ


class _StopAfter(dict):
    """A stop flag that turns on after `n` checks (one check per training step)."""

    def __init__(self, n):
        super().__init__(stop=None)
        self.n = n

    def get(self, key, default=None):  # asked before each step: stop once n steps are done
        self.n -= 1
        return "SIGINT" if self.n < 0 else None

    def __getitem__(self, key):
        return "SIGINT"


NOTEBOOK_AUGMENT = {"autoaugment": True, "mixup_alpha": 0.4, "crop_pad_mode": "zeros"}


@pytest.mark.parametrize(
    "stop_at,augment",
    [(10, None), (7, None), (10, NOTEBOOK_AUGMENT)],
    ids=["mid-epoch", "epoch-end", "notebook-augmentation"],
)  # 7 steps/epoch
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, stop_at, augment):
    p = params(augment, epochs=3, ema_decay=0.9)
    ref, ref_model = run(tmp_path / "a", p)
    with pytest.raises(TrainingInterrupted, match="SIGINT at step .*: saved .*resume.pt"):
        run(tmp_path / "b", p, flag=_StopAfter(stop_at))
    ck = load_checkpoint(tmp_path / "b" / "run" / "resume.pt")
    assert ck["state"]["step"] == stop_at
    assert len(ck["state"]["history"]) == stop_at // 7
    res, model = run(tmp_path / "b", p)
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert res.history == ref.history


def test_an_interrupted_epochs_training_time_is_saved_with_its_steps(tmp_path, monkeypatch):
    """The steps of an epoch cut short counted their images but not their time (added at epoch
    ends only): a resumed run reported 1,750 images/s where the same run whole gave 1,027. With a
    clock that ticks 1 s per reading, the saved train_time counts the cut epoch's span."""
    import src.training.loop as loop

    clock = iter(range(10**6))
    monkeypatch.setattr(loop.time, "perf_counter", lambda: float(next(clock)))
    p = params(epochs=2)
    with pytest.raises(TrainingInterrupted):
        run(tmp_path, p, flag=_StopAfter(3))  # 3 steps into the first of 7
    state = load_checkpoint(tmp_path / "run" / "resume.pt")["state"]
    assert state["step"] == 3 and state["history"] == []
    assert 0 < state["train_time"] <= state["elapsed"]  # it was 0.0: no epoch had ended


def test_changed_params_start_fresh(tmp_path):
    p = params(epochs=2)
    with pytest.raises(TrainingInterrupted):
        run(tmp_path, p, flag=_StopAfter(3))
    assert load_checkpoint(tmp_path / "run" / "resume.pt")["state"]["step"] == 3
    tx, ty, vx, vy = tiny_data()
    mean, std = mean_std()
    logs = []
    model = build_model(p.model, 3)
    cfg = FitConfig(
        train=p.train,
        augment=p.augment,
        run_dir=tmp_path / "run",
        fingerprint="other",
        meta={},
        progress=False,
        log=logs.append,
    )
    res = fit(model, (tx, ty), (vx, vy), mean, std, torch.device("cpu"), cfg)
    assert any("starting fresh" in line for line in logs)
    assert res.steps == 2 * (240 // 32)


@pytest.mark.parametrize("change", ["model", "state"])
def test_a_resume_point_this_code_cannot_continue_is_one_line(tmp_path, change):
    """The same params, other code (the project pulled between Ctrl-C and the rerun): a weight the
    model no longer has, or a run-state field it no longer knows, was a traceback."""
    from src.errors import CheckpointError

    p = params(epochs=2)
    with pytest.raises(TrainingInterrupted):
        run(tmp_path, p, flag=_StopAfter(3))
    path = tmp_path / "run" / "resume.pt"
    ck = torch.load(path, weights_only=False)
    if change == "model":
        ck["model"]["a_layer_of_another_version.weight"] = torch.zeros(1)
    else:
        ck["state"]["a_field_of_another_version"] = 1
    torch.save(ck, path)
    with pytest.raises(CheckpointError) as err:
        run(tmp_path, p)
    msg = str(err.value)
    assert msg.startswith(f"{path}: an interrupted run of these params that this version of the code cannot continue")
    assert msg.endswith(f"delete {path.parent} to start the run afresh") and "\n" not in msg


class _NaNAfter(nn.Module):
    def __init__(self, inner, n):
        super().__init__()
        self.inner, self.n = inner, n

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.n -= 1
            if self.n < 0:
                return out * float("nan")
        return out


@pytest.mark.parametrize(
    "seconds,durations,ends",
    [
        # one slow step measured first (a busy machine): sized once from it, the run ended at 3.0 s
        (10.0, [0.5, 0.5, 0.6] + [0.1] * 1000, (9.0, 10.0)),
        # 20 s at 2.4 s a step (a busy laptop): fewer steps than the speed measure waits for, so the
        # re-sizing every tenth of the budget must not wait for them either; it ended at 13.6 s
        (20.0, [2.4, 2.4, 4.0] + [2.4] * 100, (20.0 - 2.4, 20.0 + 2.4)),
    ],
)
def test_time_budget_resizes_after_a_slow_first_measure(monkeypatch, seconds, durations, ends):
    """Two warm-up steps, one slow step, then the real speed: the schedule is re-sized from the speed
    since as the run goes, and ends near the budget."""
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    budget, state = TimeBudget(seconds, steps_per_epoch=1000, val_cost_in_steps=0), RunState()
    steps = iter(durations)
    while state.total_steps is None or state.step < state.total_steps:
        clock[0] += next(steps)
        state.step += 1
        budget.after_step(state, clock[0])
    assert ends[0] <= clock[0] <= ends[1], (clock[0], state.step)


def test_time_budget_follows_the_faster_steps_after_a_freeze(monkeypatch):
    """train.freeze_at=[0.75, 0.9] makes the later steps 1.47x and 2.18x as fast (fast_cnn, AVX2): the
    budget re-sizes from the speed since each freeze, so the run ends at its 500 s. Sized at the epoch
    ends from the whole run's average, it ended at 471 s (the measured run: 470.9 s)."""
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    budget, state = TimeBudget(500.0, steps_per_epoch=191, val_cost_in_steps=1.3), RunState()
    speeds, fractions, frozen = (0.476, 0.476 / 1.47, 0.476 / 2.18), (0.75, 0.9), 0
    while state.total_steps is None or state.step < state.total_steps:
        while frozen < 2 and state.total_steps is not None and state.step >= fractions[frozen] * state.total_steps:
            frozen += 1
            budget.speed_changed(state)
        clock[0] += speeds[frozen]
        state.step += 1
        state.train_time += speeds[frozen]
        budget.after_step(state, clock[0])
        if state.step % 191 == 0 or state.step == state.total_steps:
            clock[0] += 2.0  # the validation pass
            budget.after_epoch(state, clock[0], eval_seconds=2.0)
    assert frozen == 2
    assert 495.0 <= clock[0] <= 500.0 + 0.5 + 2.0, clock[0]  # the last step may start just before the end


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    p = params(epochs=3)
    inner = build_model(p.model, 3)
    with pytest.raises(NonFiniteLoss, match="became nan at step 10 .*the last good checkpoint is .*Lower train.lr"):
        run(tmp_path, p, model=_NaNAfter(inner, 9))
    ck = load_checkpoint(tmp_path / "run" / "resume.pt")
    assert ck["state"]["step"] == 7  # end of epoch 1, before the NaN
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    # inside the first epoch there is no checkpoint to point to
    with pytest.raises(NonFiniteLoss, match=r"became nan at step 3 \(epoch 1\); before the first epoch's checkpoint\."):
        run(tmp_path / "again", p, model=_NaNAfter(build_model(p.model, 3), 2))


@pytest.mark.parametrize("budget", [4.0, 0.8])
def test_time_budget_is_honoured(tmp_path, budget):
    data = tiny_data(n_train=8000, n_val=100)
    p = params(time_budget_s=budget, batch_size=64)
    model = model_from_data(p, data[0])  # outside the timing: the whitening init is not the budget's
    importlib.import_module("torch._dynamo")  # a process's one-time import (its first optimizer's), not the loop's

    t0 = time.perf_counter()
    res, _ = run(tmp_path, p, model=model, data=data)
    wall = time.perf_counter() - t0
    # the step that crosses the budget, one validation pass and the checkpoint come after it: a
    # loaded CI machine's pause there must not fail the test (the step count below catches a loop
    # that ignores a budget shorter than an epoch)
    assert res.seconds <= budget * 1.1 + 0.3, res.seconds
    assert res.seconds >= budget * 0.7
    assert res.history and math.isfinite(res.history[-1]["val_loss"])
    assert wall < budget + 3
    if budget < 1:
        assert res.steps < 8000 // 64  # less than one epoch, and still a model with metrics
        assert res.history[-1]["partial"] is True


def test_deterministic_steps_skip_the_nan_fill_and_give_the_same_weights():
    """train.deterministic keeps results identical run to run; PyTorch's NaN-filling of every new
    tensor (a debugging aid it switches on with deterministic mode) costs a few % of a CPU step and
    is switched off: steps with and without the fill give bit-identical weights."""
    from src.training.loop import Batch, train_step
    from src.training.optim import make_optimizer
    from src.training.runtime import setup_runtime

    p = params(epochs=1)
    rt = setup_runtime(p.train, torch.device("cpu"))
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory is False
    tx, ty, _, _ = tiny_data(n_train=64)
    x = ((tx.float() / 255 - 0.5) / 0.25).contiguous(memory_format=torch.channels_last)
    weights = []
    for fill in (True, False):
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.manual_seed(0)
        model = build_model(p.model, 3).to(memory_format=torch.channels_last)
        opt = make_optimizer(model, p.train)
        for _ in range(3):
            train_step(model, model, opt, None, Batch(x, ty), p.train, rt)
        weights.append([t.detach().clone() for t in model.state_dict().values()])
    torch.utils.deterministic.fill_uninitialized_memory = False
    assert all(torch.equal(a, b) for a, b in zip(*weights))


_BIG_BLOCKS = """
import resource, sys, torch
from src.training.runtime import setup_runtime
from tests.conftest import params_with
p = params_with({"train": {"reuse_memory": sys.argv[1] == "true"}})
setup_runtime(p.train, torch.device("cpu"))
faults = []
for _ in range(10):  # a step's big activations: made, written, freed
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = torch.empty(16 << 20); a.fill_(1); b = torch.empty(8 << 20); b.fill_(1); del a, b
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(sum(faults[-4:]))
"""


@pytest.mark.skipif(not is_glibc(), reason="glibc's malloc only")
def test_reuse_memory_serves_big_blocks_again_without_page_faults():
    """train.reuse_memory: blocks of 64 and 32 MB freed and made again. glibc's default unmaps them,
    so each time the kernel maps and zeroes fresh pages (24,576 of 4 KiB; fewer where transparent
    huge pages are always on); kept, the heap serves the same pages again. Each setting in a
    process of its own (no way back within one)."""

    def run(on: str) -> int:
        r = subprocess.run([sys.executable, "-c", _BIG_BLOCKS, on], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        return int(r.stdout)

    default, kept = run("false"), run("true")
    assert default >= 4 * 40  # four rounds of 96 MB in fresh pages: at least 48 faults each, even in 2 MiB pages
    assert kept * 10 < default, (kept, default)


_THREADS = """
import os, sys
before = len(os.sched_getaffinity(0))  # before torch (and OpenMP) is loaded
import torch
from src.training.runtime import available_cores, setup_runtime
from tests.conftest import params_with
for threads in map(int, sys.argv[1:]):  # runtimes set up earlier in the same process (a benchmark's variants)
    setup_runtime(params_with({"train": {"threads": threads}}).train, torch.device("cpu"))
setup_runtime(params_with({}).train, torch.device("cpu"))  # train.threads: null
print(before, available_cores(), torch.get_num_threads())
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to tell 1 apart"
)
@pytest.mark.parametrize("binding", [{}, {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}, {"OMP_PROC_BIND": "true"}])
@pytest.mark.parametrize("earlier", [[], ["1"]], ids=["first", "after-1-thread"])
def test_threads_are_the_cores_the_process_may_use_even_where_openmp_binds_them(binding, earlier):
    """An environment that binds OpenMP's threads (HPC modules set OMP_PROC_BIND / OMP_PLACES) has
    the main thread pinned to one core once torch is loaded; train.threads: null must still train
    on every core the process was given, not on that one, also after a runtime of 1 thread."""
    from src.training.runtime import _OPENMP_BINDING

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", *_OPENMP_BINDING)}
    r = subprocess.run(
        [sys.executable, "-c", _THREADS, *earlier], cwd=REPO, capture_output=True, text=True, env={**env, **binding}
    )
    assert r.returncode == 0, r.stderr[-2000:]
    before, cores, threads = map(int, r.stdout.split())
    assert cores == threads == before, (binding, before, cores, threads)


@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_batchnorm_biases_get_their_own_lr_and_decay_when_asked(optimizer):
    from src.training.optim import make_optimizer, set_hparams

    p = params_with({"model": {"name": "fast_cnn"}, "train": {"optimizer": optimizer}})
    model = build_model(p.model, 3)
    muon = 1 if optimizer == "muon" else 0  # Muon's group (the conv filters) comes after SGD's
    assert len(make_optimizer(model, p.train).param_groups) == 1 + muon  # factor 1: one SGD group
    q = params_with({"train": {"optimizer": optimizer, "bn_bias_lr_factor": 64.0}})
    opt = make_optimizer(model, q.train)
    assert len(opt.param_groups) == 2 + muon
    rest, biases = opt.param_groups[:2]
    bn = [m.bias for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(t) for t in biases["params"]} == {id(t) for t in bn} and len(bn) == 6
    grouped = [id(t) for g in opt.param_groups[:2] for t in g["params"]]
    trainable = [t for t in model.parameters() if t.requires_grad and (not muon or t.ndim != 4)]
    assert sorted(grouped) == sorted(id(t) for t in trainable)  # each tensor in one group
    lr = set_hparams(opt, q.train, 10, 100)
    assert rest["lr"] == lr and biases["lr"] == 64 * lr
    assert biases["weight_decay"] * biases["lr"] == pytest.approx(rest["weight_decay"] * rest["lr"])


@pytest.mark.parametrize("optimizer, muon_momentum", [("sgd", None), ("muon", None), ("muon", 0.6)])
def test_with_cycled_momentum_train_momentum_changes_nothing(optimizer, muon_momentum):
    """What src.run_diff.why_unused tells a reviewer: with train.cycle_momentum on, the schedule sets
    every group's momentum (Muon's own, where train.muon_momentum gives one, stays that), so two
    values of train.momentum train the same weights."""
    from src.training.optim import make_optimizer, set_hparams

    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    weights = []
    for momentum in (0.9, 0.5):
        over = {"optimizer": optimizer, "cycle_momentum": True, "momentum": momentum, "muon_momentum": muon_momentum}
        p = params_with({"model": {"name": "fast_cnn"}, "train": over})
        torch.manual_seed(0)
        model = build_model(p.model, 3)
        opt = make_optimizer(model, p.train)
        for step in range(3):
            set_hparams(opt, p.train, step, 10)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        weights.append([t.detach().clone() for t in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_freeze_at_stops_each_stage_for_good_and_skips_its_backward(tmp_path):
    """FreezeOut: 2 epochs of 7 steps; stage 1 (whitening + group 1) stops before step 8 (7 ≥ 0.5 × 14),
    stage 2 before step 12 (11 ≥ 0.75 × 14); group 3 and the head train to the end."""
    p = params(epochs=2, freeze_at=[0.5, 0.75], optimizer="muon")
    tx = tiny_data()[0]
    torch.manual_seed(0)
    model = model_from_data(p, tx)
    snaps = []
    res, _ = run(
        tmp_path, p, model, on_epoch=lambda row: snaps.append({k: v.clone() for k, v in model.state_dict().items()})
    )
    assert res.steps == 14
    after_epoch_1, end = snaps[0], model.state_dict()
    for name in ("features.group1.conv1.weight", "features.group1.conv2.weight", "features.group1.bn1.bias"):
        assert torch.equal(end[name], after_epoch_1[name]), name  # frozen from the first step of epoch 2
    for name in ("features.group2.conv1.weight", "features.group3.conv2.weight", "fc.weight"):
        assert not torch.equal(end[name], after_epoch_1[name]), name  # still trained after step 7
    g = model.features
    assert [q.requires_grad for q in g.group1.parameters()] == [False] * 6
    assert not any(q.requires_grad for q in g.group2.parameters())
    assert all(q.requires_grad for q in g.group3.parameters())
    # no graph through the frozen stages: their backward pass is never run
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not g.group2(g.group1(model.act(model.whiten(x)))).requires_grad
    model(x).sum().backward()
    assert all(q.grad is None for q in list(g.group1.parameters()) + list(g.group2.parameters()))
    assert all(q.grad is not None for q in g.group3.parameters())


def test_freeze_at_catches_up_on_resume_and_counts_the_model_stages():
    """A resumed run freezes every stage already due at its first step; a model with fewer stages
    than fractions is refused with one line."""
    from src.errors import ParamsError
    from src.training.distributed import Dist
    from src.training.loop import build_learner
    from src.training.runtime import setup_runtime

    p = params(freeze_at=[0.2, 0.4])
    model = build_model(p.model, 3)
    learner = build_learner(model, p.train, setup_runtime(p.train, torch.device("cpu")), Dist())
    assert learner.freeze_due(0, 100) == []
    assert learner.freeze_due(45, 100) == [0, 1]  # resumed at step 45: both at once
    assert learner.freeze_due(46, 100) == []
    assert not any(q.requires_grad for q in model.whiten.parameters())  # stage 1 holds the first layer
    assert all(q.requires_grad for q in model.features.group3.parameters())

    p4 = params(freeze_at=[0.2, 0.4, 0.6, 0.8])
    with pytest.raises(ParamsError) as e:
        build_learner(build_model(p4.model, 3), p4.train, setup_runtime(p4.train, torch.device("cpu")), Dist())
    assert "\n" not in str(e.value)
    assert "train.freeze_at=[0.2, 0.4, 0.6, 0.8]: 4 fractions, but this model has 3 stage(s)" in str(e.value)


@pytest.mark.parametrize(
    "keys,named",
    [
        ([("model", "fast_cnn", "activation")], ["(model.fast_cnn.activation: missing)"]),
        (
            [("augment", "brightness"), ("augment", "contrast")],
            ["(augment.brightness: missing; augment.contrast: missing)"],
        ),
    ],
    ids=["model-key", "augment-keys"],
)
def test_a_checkpoint_from_before_a_new_key_asks_for_a_retrain(tmp_path, keys, named):
    """A best.pt saved before keys were added to the model's or the augment section
    (model.fast_cnn.activation; augment.brightness/contrast): one line naming the checkpoint and
    the keys, not an error that blames params.yaml or counts pydantic's errors."""
    from src.errors import CheckpointError
    from src.models import build_model
    from src.training.checkpoints import load_trained, save_checkpoint

    p = params_with({})
    params = p.model_dump()
    model = build_model(p.model, 3)
    kept = {}
    for *where, key in keys:
        section = params
        for name in where:
            section = section[name]
        kept[key] = (section, section.pop(key))
    path = tmp_path / "best.pt"
    save_checkpoint(path, model.state_dict(), {"params": params, "classes": ["a", "b", "c"]})
    with pytest.raises(CheckpointError) as e:
        load_trained(path, ["a", "b", "c"])
    msg = str(e.value)
    assert "\n" not in msg and "params.yaml" not in msg and "validation error" not in msg, msg
    assert msg.startswith(f"{path}: its params do not fit this version of the code"), msg
    assert all(part in msg for part in named), msg
    assert msg.endswith("retrain (dvc repro train)"), msg
    for key, (section, value) in kept.items():
        section[key] = value
    save_checkpoint(path, model.state_dict(), {"params": params, "classes": ["a", "b", "c"]})
    assert load_trained(path, ["a", "b", "c"])[0] is not None


def test_fit_times_its_set_up_and_first_step_and_the_stage_reports_them(tmp_path):
    """The train stage's start-up, phase by phase (`Trainer.laps`, stages/train.py's log line and
    `startup_seconds` in metrics/timing.json): each phase measured once, in order, ending with the
    first step, whose time is longer than a later step's (kernels chosen, buffers allocated)."""
    from src.training.startup import Laps, process_seconds
    from stages.train import startup_line, timing

    t0 = time.perf_counter()
    res, _ = run(tmp_path, params(epochs=2))
    wall = time.perf_counter() - t0
    assert list(res.startup) == ["runtime", "optimizer", "batches", "files", "first_step"]
    assert all(v >= 0 for v in res.startup.values()) and sum(res.startup.values()) < wall
    assert res.startup["first_step"] < res.train_seconds
    laps, before = Laps(), process_seconds()
    time.sleep(0.05)
    laps.lap("data")
    after = process_seconds()
    assert 0.05 <= laps.seconds["data"] < 1
    if sys.platform == "linux":  # the seconds since this process started, from /proc
        assert before > 0 and 0.04 <= after - before < 1
    startup = {"imports": 2.0, "data": 0.25, "model": 0.5, **res.startup}
    line = startup_line(startup)
    total = sum(startup.values())
    assert line.startswith(f"train: {total:.1f} s from the start to the first step's end: imports 2.0, ")
    for part in (", model and whitening init 0.5, runtime ", ", model to device and optimizer ", ", first step "):
        assert part in line
    assert timing(res, startup)["startup_seconds"] == round(sum(startup.values()), 2)
