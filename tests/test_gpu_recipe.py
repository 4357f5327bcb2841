"""The GPU recipe and its pieces (alternating flip, Muon for conv filters, lookahead, half-precision
weights, a step loop that never waits for the device), each run on the CPU; and how the recipe is
chosen (params.yaml `gpu`) and recorded (metrics/train.json)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from src.data.augment import alternating_flips
from src.data.cifar import normalize
from src.errors import ParamsError
from src.models import build_model
from src.training.loop import FitConfig, Trainer, _step_generator, build_trainer, fit, init_from_data
from src.training.optim import (
    Lookahead,
    Muon,
    MuonSGD,
    cycle_momentum,
    make_optimizer,
    muon_dtype,
    newton_schulz,
    set_hparams,
)
from tests.conftest import REPO, make_repo, params_with, sh
from tests.test_training import tiny_data

GPU_ALWAYS = {
    "gpu": {
        "use": "always",
        "model": {"fast_cnn": {"widths": [8, 16, 16]}},
        "train": {"batch_size": 32, "epochs": 3, "compile": False},
    }
}
MEAN, STD = torch.tensor([0.5] * 3), torch.tensor([0.25] * 3)


def trainer(p, tmp_path, data=None) -> Trainer:
    tx, ty, vx, vy = data or tiny_data()
    torch.manual_seed(0)
    model = build_model(p.model, 3)
    init_from_data(model, tx, MEAN, STD)
    cfg = FitConfig(
        train=p.train,
        augment=p.augment,
        run_dir=tmp_path / "run",
        fingerprint="fp",
        meta={},
        progress=False,
        log=lambda s: None,
    )
    return build_trainer(model, (tx, ty), (vx, vy), MEAN, STD, torch.device("cpu"), cfg)


# --- choosing the recipe ---------------------------------------------------------------------


def test_the_committed_gpu_recipe_applies_on_cuda_only():
    p = params_with()
    same, name = p.recipe_for("cpu")
    assert name == "default" and same == p
    assert p.recipe_for("mps")[1] == "default"
    g, name = p.recipe_for("cuda")
    assert name == "gpu"
    assert g.train.batch_size == 1024 and g.train.optimizer == "muon" and g.train.half == "bf16"
    assert g.augment.hflip == "alternate" and g.model.raw_section()["widths"] == [64, 256, 256]
    # everything the gpu section does not name stays as written
    assert g.data == p.data and g.evaluate == p.evaluate and g.train.label_smoothing == p.train.label_smoothing


@pytest.mark.parametrize("native", [True, False])
def test_the_gpu_recipe_trains_in_fp32_on_a_gpu_without_native_bf16(native, monkeypatch):
    """Colab's free T4 (compute capability 7.5) only emulates bf16: eager bf16 crawls there and
    torch.compile skips bf16 graphs, so the recipe's bf16 weights become fp32 (and autocast stays off)."""
    import src.training.runtime as runtime

    monkeypatch.setattr(runtime, "cuda_has_native_bf16", lambda: native)
    g, _ = params_with().recipe_for("cuda")
    rt = runtime.setup_runtime(g.train, torch.device("cuda"))
    assert (rt.half, rt.amp, rt.precision) == (
        (torch.bfloat16, False, "bf16 weights") if native else (None, False, "fp32")
    )
    # the default recipe's autocast follows the same rule on CUDA
    assert runtime.setup_runtime(params_with().train, torch.device("cuda")).amp is native


def test_gpu_use_always_and_never():
    assert params_with({"gpu": {"use": "always"}}).recipe_for("cpu")[1] == "gpu"
    assert params_with({"gpu": {"use": "never"}}).recipe_for("cuda")[1] == "default"
    assert params_with({"gpu": {"use": False}}).gpu.use == "never"  # `-S gpu.use=off` reads as False
    assert params_with({"train": {"half": False}}).train.half == "off"  # `-S train.half=off` likewise


@pytest.mark.parametrize(
    "over,line",
    [
        (
            {"train": {"batch_size": 0}},
            "params.yaml: gpu.train.batch_size=0: Input should be greater than or equal to 1",
        ),
        (
            {"train": {"optimiser": "sgd"}},
            "params.yaml: unknown key 'gpu.train.optimiser' (did you mean 'gpu.train.optimizer'?)",
        ),
        ({"augment": {"hflip": "sometimes"}}, "params.yaml: gpu.augment.hflip='sometimes'"),
        ({"use": "maybe"}, "params.yaml: gpu.use='maybe'"),
    ],
)
def test_a_bad_gpu_value_is_one_line_naming_its_key(over, line):
    with pytest.raises(ParamsError) as e:
        params_with({"gpu": over})
    assert str(e.value).startswith(line) and "\n" not in str(e.value)


# --- alternating flip ------------------------------------------------------------------------


def test_alternating_flip_shows_every_image_both_ways_in_two_epochs(tmp_path):
    p = params_with(
        {
            "augment": {"hflip": "alternate", "crop_padding": 0},
            "train": {"batch_size": 240, "threads": 1},
            "model": {"fast_cnn": {"widths": [8, 16, 16]}},
        }
    )
    t = trainer(p, tmp_path)
    order = torch.arange(240)
    plain = normalize(t.batches.images, t.batches.mean, t.batches.std)
    seen = []
    for epoch in (0, 1, 2):
        x = t.batches.make(order, 0, epoch * t.steps_per_epoch, _step_generator(t.runtime.device, 0)).x
        as_is = (x == plain).flatten(1).all(1)
        mirrored = (x == plain.flip(3)).flatten(1).all(1)
        assert bool((as_is | mirrored).all())
        seen.append(mirrored & ~as_is)
    assert bool((seen[0] ^ seen[1]).all())  # epoch 1 mirrors exactly the others
    assert torch.equal(seen[0], seen[2])  # and epoch 2 repeats epoch 0
    assert 0.3 < seen[0].float().mean() < 0.7
    assert torch.equal(alternating_flips(240, 0, torch.device("cpu")), alternating_flips(240, 0, torch.device("cpu")))


# --- Muon for conv filters -------------------------------------------------------------------


def _model(channels_last: bool = False, over: dict | None = None) -> nn.Module:
    torch.manual_seed(0)
    fast = {"widths": [8, 16, 16], **((over or {}).get("model") or {}).get("fast_cnn", {})}
    m = build_model(params_with({"model": {"fast_cnn": fast}}).model, 3)
    init_from_data(m, tiny_data()[0], MEAN, STD)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def _loss(m: nn.Module, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 3, (16,), generator=g)
    return nn.functional.cross_entropy(m(x), y)


@pytest.mark.parametrize("channels_last", [False, True])
def test_muon_orthogonalises_conv_filter_updates_and_sgd_steps_the_rest(channels_last):
    p = params_with(
        {
            "train": {
                "optimizer": "muon",
                "momentum": 0.0,
                "nesterov": False,
                "weight_decay": 0.0,
                "muon_lr": 0.1,
                "lr": 0.05,
            }
        }
    )
    m, ref = _model(channels_last), _model(channels_last)
    opt = make_optimizer(m, p.train)
    assert isinstance(opt, MuonSGD)
    sgd_ref = torch.optim.SGD([q for q in ref.parameters() if q.requires_grad and q.ndim != 4], lr=0.05)
    for g in opt.param_groups:
        g["lr"] = 0.05 * g["lr_scale"]  # what the schedule does
    _loss(m).backward()
    _loss(ref).backward()
    conv = m.features.group2.conv1.weight
    before = conv.detach().clone()
    before = before * (before.shape[0] ** 0.5 / before.norm())  # Muon's step renormalises first
    opt.step()
    sgd_ref.step()
    update = (before - conv.detach()).reshape(conv.shape[0], -1) / (0.05 * opt.param_groups[1]["lr_scale"])
    s = torch.linalg.svdvals(update.double())
    assert s.min() > 0.5 and s.max() < 1.5  # Newton-Schulz: all singular values near 1
    assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
    for (name, a), b in zip(m.named_parameters(), ref.parameters()):
        if a.ndim != 4 and a.requires_grad:
            assert torch.allclose(a, b), name  # the rest: plain SGD
    assert not m.whiten.weight.requires_grad and torch.equal(m.whiten.weight, ref.whiten.weight)


def test_muon_takes_only_filters_a_batchnorm_follows_and_sgd_a_trained_whitening_layer():
    """Muon rescales each filter bank to norm sqrt(out channels) every step, which only a
    normalisation after the conv makes harmless. fast_cnn's whitening layer feeds GELU directly:
    trained (`whiten_trainable: true`), Muon shrank its data-derived filters ~19× on the first step."""
    from src.models.base import normalised_convs

    over = {"model": {"fast_cnn": {"whiten_trainable": True}}}
    p = params_with(
        {**over, "train": {"optimizer": "muon", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "lr": 1e-4}}
    )
    m = _model(False, over)
    convs = [n for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)]
    assert normalised_convs(m) == [n for n in convs if n != "whiten"] and len(convs) == 7
    opt = make_optimizer(m, p.train)
    assert {id(q) for q in opt.filters} == {id(m.get_submodule(n).weight) for n in convs[1:]}
    before = m.whiten.weight.detach().clone()
    for g in opt.param_groups:
        g["lr"] = 1e-4 * g["lr_scale"]
    _loss(m).backward()
    opt.step()
    assert torch.allclose(m.whiten.weight, before, rtol=0, atol=1e-3)  # an SGD step of lr 1e-4, no rescaling
    assert m.whiten.weight.norm() / before.norm() > 0.99


class _Branches(nn.Module):  # b feeds a BatchNorm; a, called after it, feeds GELU
    def __init__(self):
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        b = self.b(x)
        return torch.cat([nn.functional.gelu(self.a(x)), self.bn(b)], 1)


class _Twice(nn.Module):  # one conv called twice: into a BatchNorm, then into GELU
    def __init__(self):
        super().__init__()
        self.c, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        return nn.functional.gelu(self.c(self.bn(self.c(x))))


class _Residual(nn.Module):  # c2's output is summed with the skip before the BatchNorm: its scale matters
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.pool, self.skip = nn.MaxPool2d(1), nn.Identity()
        self.bn1, self.bn2 = nn.BatchNorm2d(3), nn.BatchNorm2d(3)

    def forward(self, x):
        h = self.bn1(self.pool(self.c1(x)))  # through a pool: still c1's scale alone
        return self.bn2(self.c2(h) + self.skip(h))


def _weight_normed() -> nn.Module:
    net = _between(nn.ReLU())()
    nn.utils.parametrizations.weight_norm(net[0])
    return net


def _between(act: nn.Module) -> type[nn.Module]:  # conv → act → BatchNorm, as a student orders them
    return lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), act, nn.BatchNorm2d(4))


@pytest.mark.parametrize(
    ("model", "want"),
    [
        (_Branches, ["b"]),
        (_Twice, []),
        (_Residual, ["c1"]),
        # ReLU keeps the scale (relu(a·x) = a·relu(x), a > 0), in place or not; it was [] without
        # in-place and ["0"] with, by accident; SiLU in place changes the scale and was ["0"] too
        (_between(nn.ReLU()), ["0"]),
        (_between(nn.ReLU(inplace=True)), ["0"]),
        (_between(nn.SiLU(inplace=True)), []),
        (_between(nn.SiLU()), []),
        # a conv with a parametrization holds modules of its own: hooked all the same
        (_weight_normed, ["0"]),
    ],
    ids=["branches", "twice", "residual", "relu", "relu-inplace", "silu-inplace", "silu", "weight-norm"],
)
def test_the_convs_muon_takes_are_followed_tensor_by_tensor(model, want):
    """By call order alone, the next module to finish after a conv was taken as its consumer: a
    branch's conv, a conv also used unnormalised, or a residual branch went to Muon."""
    from src.models.base import normalised_convs

    assert normalised_convs(model()) == want


def test_training_says_which_convs_muon_leaves_to_sgd():
    """Only "no conv feeds a BatchNorm" was said: a net with some convs Muon can't take (a trained
    whitening layer) trained them with SGD in silence."""
    from src.training.loop import muon_note

    over = {"model": {"fast_cnn": {"whiten_trainable": True}}}
    m = _model(False, over)
    convs = [n for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)]
    assert muon_note(m, convs[1:]) == (
        "train: note: Muon trains 6 of the 7 trained convs, those a BatchNorm takes the output of; "
        "SGD trains the others (whiten)"
    )
    assert muon_note(_model(False), convs[1:]) is None  # the default: the whitening layer is not trained
    assert "it trains with SGD" in muon_note(m, [])


@pytest.mark.parametrize("cycle", [False, True])
def test_muon_momentum_is_the_filters_own_and_the_sgd_part_keeps_train_momentum(cycle):
    p = params_with({"train": {"optimizer": "muon", "momentum": 0.9, "muon_momentum": 0.6, "cycle_momentum": cycle}})
    opt = make_optimizer(_model(), p.train)
    sgd_groups, (muon_group,) = opt.sgd.param_groups, opt.muon.param_groups
    for step in (0, 20, 99):
        set_hparams(opt, p.train, step, 100)
        assert muon_group["momentum"] == 0.6  # the filters' own, never cycled
        expected = cycle_momentum(step, 100, p.train.pct_start, anneal=p.train.anneal) if cycle else 0.9
        assert all(g["momentum"] == pytest.approx(expected) for g in sgd_groups)
    # unset, Muon follows train.momentum, cycled with the rest
    q = params_with({"train": {"optimizer": "muon", "momentum": 0.9, "muon_momentum": None, "cycle_momentum": cycle}})
    opt = make_optimizer(_model(), q.train)
    set_hparams(opt, q.train, 20, 100)
    assert opt.muon.param_groups[0]["momentum"] == opt.sgd.param_groups[0]["momentum"]
    assert (opt.muon.param_groups[0]["momentum"] != 0.9) == cycle


def test_muon_state_round_trips_for_resume():
    p = params_with({"train": {"optimizer": "muon"}})
    a, b = _model(), _model()
    oa = make_optimizer(a, p.train)
    for s in range(3):
        oa.zero_grad()
        _loss(a, s).backward()
        oa.step()
    b.load_state_dict(a.state_dict())
    ob = make_optimizer(b, p.train)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))  # as a checkpoint file would hand it back
    for o, mdl in ((oa, a), (ob, b)):
        o.zero_grad()
        _loss(mdl, 9).backward()
        o.step()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def _muon_pair(dtype: torch.dtype, steps: int = 3) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two wide and one tall matrix stepped by torch.optim.Muon and by ours, the same gradients."""
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(s)) for s in ((96, 432), (48, 216), (192, 96))]
    ref = [nn.Parameter(q.detach().clone()) for q in ours]
    o_ref = torch.optim.Muon(ref, lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.0)
    o_ours = Muon(ours, lr=0.1, momentum=0.85, nesterov=True, ns_dtype=dtype)
    for _ in range(steps):
        for a, b in zip(ours, ref):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        o_ours.step()
        o_ref.step()
    return ours, ref


def test_our_muon_in_bf16_is_torchs_muon_to_the_bit_and_in_fp32_within_bf16_rounding():
    ours, ref = _muon_pair(torch.bfloat16)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    ours, ref = _muon_pair(torch.float32)
    for a, b in zip(ours, ref):
        assert not torch.equal(a, b)  # really computed in fp32 ...
        torch.testing.assert_close(a, b, rtol=0, atol=5e-3)  # ... the same update up to bf16's rounding


def test_the_orthogonalisation_runs_in_fp32_where_bf16_is_not_native(monkeypatch):
    import src.training.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert muon_dtype(torch.device("cpu")) == torch.float32
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert muon_dtype(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(runtime, "cuda_has_native_bf16", lambda: True)  # an A100, an H100
    assert muon_dtype(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(runtime, "cuda_has_native_bf16", lambda: False)  # a T4, a V100
    assert muon_dtype(torch.device("cuda")) == torch.float32
    g = torch.randn(96, 864)
    assert newton_schulz(g, torch.float32).dtype == torch.float32
    s = torch.linalg.svdvals(newton_schulz(g, torch.float32).double())
    assert s.min() > 0.5 and s.max() < 1.5  # all singular values near 1, as Muon's iteration leaves them


# --- lookahead -------------------------------------------------------------------------------


def test_lookahead_pulls_weights_to_their_average_and_ends_on_it():
    m = nn.Linear(1, 1, bias=False)
    m.weight.data.fill_(0.0)
    la = Lookahead(m, every=2, decay=0.5)
    m.weight.data.fill_(1.0)
    la.after_step(m, 1, 4)  # not a lookahead step
    assert m.weight.item() == 1.0
    la.after_step(m, 2, 4)  # keep = 0.5**2 * (2/4)**3 = 1/32 of the average (0)
    assert m.weight.item() == pytest.approx(1 - 1 / 32)
    m.weight.data.fill_(5.0)
    la.after_step(m, 4, 4)  # the last step: the model becomes the average, which keeps its value
    assert m.weight.item() == pytest.approx(1 - 1 / 32)


# --- half precision, the step loop, the whole recipe on a CPU --------------------------------


def test_half_weights_train_with_batchnorm_in_fp32(tmp_path):
    p = params_with(
        {
            "train": {"half": "bf16", "epochs": 4, "batch_size": 32, "lr": 0.02, "threads": 1},
            "model": {"fast_cnn": {"widths": [8, 16, 16]}},
        }
    )
    t = trainer(p, tmp_path)
    dtypes = {
        type(mod).__name__: mod.weight.dtype
        for mod in t.learner.model.modules()
        if getattr(mod, "weight", None) is not None
    }
    assert dtypes["Conv2d"] == torch.bfloat16 and dtypes["Linear"] == torch.bfloat16
    assert dtypes["BatchNorm2d"] == torch.float32
    assert t.runtime.precision == "bf16 weights" and not t.runtime.amp
    while not t.state.finished:
        meter, lr = t.train_epoch(None)
        t.end_epoch(meter, lr)
    res = t.result()
    assert res.history[-1]["val_acc"] > 0.9 and res.history[-1]["train_loss"] < res.history[0]["train_loss"]


_HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "numpy")


def test_the_step_loop_of_the_gpu_recipe_reads_nothing_back_from_the_device(tmp_path, monkeypatch):
    """On CUDA every host read waits for the queue to drain; the loop between epoch ends must do
    none (here: Python-side reads patched to raise, on the CPU; on a GPU the test below)."""
    p, name = params_with({**GPU_ALWAYS, "augment": {"mixup_alpha": 0.4, "autoaugment": True}}).recipe_for("cpu")
    assert name == "gpu"
    t = trainer(p, tmp_path)
    t.host_checks = False  # as on CUDA
    t.batches.autoaugment.sync_free = True  # AutoAugment's CUDA path (on a CPU it gathers the drawn images)
    calls = []

    def refuse(self, *a, **k):
        calls.append(1)
        raise AssertionError("a host read inside the step loop")

    t.train_epoch(None)  # the first epoch builds AutoAugment's tables (host constants, once per run)
    for attr in _HOST_READS:
        monkeypatch.setattr(torch.Tensor, attr, refuse)
    t.train_epoch(None)
    monkeypatch.undo()
    assert t.state.step == 2 * t.steps_per_epoch and not calls


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_gpu_step_loop_does_not_synchronise(tmp_path):
    p, _ = params_with(GPU_ALWAYS).recipe_for("cuda")
    tx, ty, vx, vy = tiny_data()
    model = build_model(p.model, 3)
    init_from_data(model, tx, MEAN, STD)
    cfg = FitConfig(
        train=p.train,
        augment=p.augment,
        run_dir=tmp_path / "run",
        fingerprint="fp",
        meta={},
        progress=False,
        log=lambda s: None,
    )
    t = build_trainer(model, (tx, ty), (vx, vy), MEAN, STD, torch.device("cuda"), cfg)
    t.train_epoch(None)  # warm-up: allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        t.train_epoch(None)
    finally:
        torch.cuda.set_sync_debug_mode(0)


def fit_on_cpu(p, tmp_path):
    """`fit` of params `p` on the tiny synthetic data, on the CPU, from seed 0."""
    tx, ty, vx, vy = tiny_data()
    torch.manual_seed(0)
    model = build_model(p.model, 3)
    init_from_data(model, tx, MEAN, STD)
    cfg = FitConfig(
        train=p.train,
        augment=p.augment,
        run_dir=tmp_path / "run",
        fingerprint="fp",
        meta={},
        progress=False,
        log=lambda s: None,
    )
    return fit(model, (tx, ty), (vx, vy), MEAN, STD, torch.device("cpu"), cfg)


def test_the_gpu_recipe_learns_on_a_cpu(tmp_path):
    p, _ = params_with(GPU_ALWAYS).recipe_for("cpu")
    res = fit_on_cpu(p, tmp_path)
    assert res.runtime.precision == "bf16 weights"
    assert res.best_val_acc > 0.9


def test_the_train_stage_records_the_recipe(tmp_path, full_mirror):
    repo = make_repo(tmp_path / "lab", full_mirror, over=GPU_ALWAYS)
    out = sh(repo, "dvc", "repro", "evaluate", env_extra={"CIFAR10_MIRROR": str(full_mirror)})
    assert "train: recipe gpu (gpu.use=always, training on cpu: the values of params.yaml `gpu` in place)" in out.stdout
    train = json.loads((repo / "metrics/train.json").read_text())
    assert (train["recipe"], train["optimizer"], train["batch_size"], train["precision"]) == (
        "gpu",
        "muon",
        32,
        "bf16 weights",
    )
    ck = torch.load(repo / "models/best.pt", weights_only=False)
    assert ck["params"]["augment"]["hflip"] == "alternate" and ck["params"]["train"]["lookahead_steps"] == 5
    assert json.loads((repo / "metrics/eval.json").read_text())["test_acc"] > 0.5
    # a recipe value that does not fit this data names the gpu section as where to change it
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["gpu"]["train"]["batch_size"] = 100_000
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = sh(repo, "python", "-m", "stages.train", check=False)
    assert r.returncode != 0
    assert "params.yaml: train.batch_size=100000: larger than the training split" in r.stderr + r.stdout
    assert "(a value of the GPU recipe: set it under gpu.train, or -S gpu.use=never)" in r.stderr + r.stdout


def test_the_check_stage_checks_the_gpu_recipes_model_values(tmp_path, monkeypatch):
    from stages.check import main as check

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError) as e:
        check(params_with({"gpu": {"use": "never", "model": {"fast_cnn": {"widths": [64, 0, 256]}}}}))
    assert str(e.value).startswith("params.yaml: gpu.model.fast_cnn.widths.1=0")
    with pytest.raises(ParamsError, match="unknown key 'gpu.model.fast_cn'"):
        check(params_with({"gpu": {"model": {"fast_cn": {"widths": [1, 2, 3]}}}}))
    check(params_with())
    assert (tmp_path / "data/params.ok").is_file()


def test_the_gpu_benchmarks_budget_is_training_time_only(tmp_path, small_batches, monkeypatch):
    """`--budget` gives training its seconds: the benchmark's test pass after every epoch (here a
    slow one) is outside the timing, the budget's own clock too."""
    from benchmarks import gpu_recipe

    real_evaluate = gpu_recipe.evaluate

    def slow_evaluate(*args, **kwargs):
        time.sleep(0.5)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(gpu_recipe, "evaluate", slow_evaluate)
    monkeypatch.setenv("CIFAR10_MIRROR", str(small_batches))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    gpu_recipe.main(
        ["--runs", "1", "--warmup", "0", "--classes", "cat", "ship", "--train-per-class", "200", "--budget", "3"]
        + ["--device", "cpu", "--name", "t", "--set", "train.batch_size=8", "train.compile=false", "train.threads=1"]
        + ["model.fast_cnn.widths=[8,16,16]"]
    )
    (run,) = json.loads((tmp_path / "benchmarks/results/t.json").read_text())["runs"]
    assert len(run["curve"]) >= 3  # epochs of well under a second, each followed by a test pass slowed by 0.5 s
    assert 2.0 < run["curve"][-1]["seconds"] < 4.0  # of training, about the budget


def test_the_gpu_benchmark_runs_on_a_cpu(tmp_path, small_batches, monkeypatch):
    from benchmarks import gpu_recipe

    monkeypatch.setenv("CIFAR10_MIRROR", str(small_batches))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    gpu_recipe.main(
        [
            "--runs",
            "2",
            "--warmup",
            "1",
            "--classes",
            "cat",
            "ship",
            "--train-per-class",
            "60",
            "--target",
            "0.6",
            "--device",
            "cpu",
            "--name",
            "t",
            "--set",
            "train.batch_size=32",
            "train.epochs=3",
            "train.compile=false",
            "train.threads=1",
            "model.fast_cnn.widths=[8,16,16]",
        ]
    )
    out = json.loads((tmp_path / "benchmarks/results/t.json").read_text())
    assert out["recipe"] == "gpu" and out["train"]["optimizer"] == "muon" and out["augment"]["hflip"] == "alternate"
    assert len(out["runs"]) == 2 and out["device"].startswith("cpu")
    for r in out["runs"]:
        assert [c["epoch"] for c in r["curve"]] == [1, 2, 3]
        secs = [c["seconds"] for c in r["curve"]]
        assert secs == sorted(secs) and r["seconds"] >= secs[-1] > 0
        assert r["test_acc"] == r["curve"][-1]["test_acc"]
        first = next((c["seconds"] for c in r["curve"] if c["test_acc"] >= 0.6), None)
        assert r["time_to_target"] == first
    accs = sorted(r["test_acc"] for r in out["runs"])
    assert out["summary"]["test_acc"]["median"] == pytest.approx(sum(accs) / 2)
    assert out["summary"]["test_acc"]["min"] == accs[0]


def test_the_gpu_recipe_compiles_on_a_cpu_without_graph_breaks(tmp_path):
    """The GPU recipe as a GPU runs it — torch.compile on, bf16 weights, Muon, lookahead, alternating
    flips — through inductor's CPU backend: a compile error, a graph break or a recompilation for
    every step shows here, before a student's GPU meets it."""
    from torch._dynamo.utils import counters

    over = copy.deepcopy(GPU_ALWAYS)
    over["gpu"]["train"].update({"compile": True, "epochs": 2})
    p, name = params_with(over).recipe_for("cpu")
    assert name == "gpu" and p.train.compile and p.train.half == "bf16" and p.train.optimizer == "muon"
    torch._dynamo.reset()
    counters.clear()
    res = fit_on_cpu(p, tmp_path)
    assert counters["stats"]["unique_graphs"] >= 1  # the forward did go through the compiler
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] <= 2  # full batches, and at most the last short one
    assert res.runtime.precision == "bf16 weights"
    assert res.best_val_acc > 0.6


def test_the_one_script_of_gpu_checks_runs_every_step_on_a_cpu(tmp_path, small_batches):
    """benchmarks/gpu_all.sh with tiny sizes on the CPU (QUICK=1): every check it makes on a GPU
    runs, writes its results and its summary line, so the first GPU it meets only adds the speed."""
    repo = tmp_path / "repo"
    for name in ("src", "benchmarks", "tests"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    for name in ("params.yaml", "pyproject.toml"):
        shutil.copy(REPO / name, repo / name)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DEVICE": "cpu",
        "RUNS": "1",
        "QUICK": "1",
        "CIFAR10_MIRROR": str(small_batches),
        "OUT": str(tmp_path / "out"),  # a remote GPU machine's folder that comes back
    }
    (tmp_path / "out").mkdir()
    script = ["bash", "benchmarks/gpu_all.sh"]
    r = subprocess.run(script, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = (repo / "benchmarks/results/gpu_all_cpu.txt").read_text().splitlines()
    assert [ln.split(" (")[0] for ln in lines[:4]] == [
        "tests",
        "time to 0.906",
        "accuracy in 10 s",
        "notebook recipe, AutoAugment",
    ]
    assert "passed" in lines[0] and lines[-1].startswith("all GPU checks: ")
    assert lines[-1].endswith(", 0 failed") and "FAILED" not in "\n".join(lines)
    for name in ("gpu_all_target_cpu", "gpu_all_10s_cpu"):
        out = json.loads((repo / f"benchmarks/results/{name}.json").read_text())
        assert out["recipe"] == "gpu" and len(out["runs"]) == 1
    assert json.loads((repo / "benchmarks/results/autoaugment_cpu.json").read_text())
    brought_back = ["autoaugment_cpu.json", "gpu_all_10s_cpu.json", "gpu_all_cpu.txt", "gpu_all_target_cpu.json"]
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == brought_back


def test_the_gpu_script_names_a_missing_pydantic_before_it_starts(tmp_path):
    """A GPU image with PyTorch but no pydantic (and no wheels brought in .whl/): one line, exit 2."""
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "pydantic.py").write_text("raise ImportError('not installed')\n")
    shutil.copytree(REPO / "benchmarks", tmp_path / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(tmp_path / "shadow"), "CIFAR10_MIRROR": "x"}
    r = subprocess.run(["bash", "benchmarks/gpu_all.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("gpu_all.sh: pydantic is missing: pip install") and r.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--classes", "cat", "dgo"], "data.classes=['cat', 'dgo']: unknown class 'dgo'"),  # was a traceback
        (["--device", "gpu"], "train.device='gpu': Input should be"),
        (["--runs", "0"], "argument --runs: 0: allowed at least 1"),  # ran, then failed at the median of nothing
        (["--warmup", "-3"], "argument --warmup: -3: allowed at least 0"),
        (["--target", "2"], "--target 2: a test accuracy in (0, 1]"),  # "to 2.0: not reached", exit 0
        (["--budget", "-5"], "--budget -5: seconds above 0, finite"),
        (["--name", "../../x"], "--name '../../x': not a plain file name"),  # wrote outside benchmarks/results
        (
            ["--classes", "cat", "dog", "--train-per-class", "20", "--set", "train.batch_size=64"],
            "error: train.batch_size=64: larger than the training split (40 images); allowed: ≤ 40 (try 4) (the gpu "
            "recipe's value after --device and --set; --set changes it",
        ),
    ],
)
def test_the_gpu_benchmarks_bad_arguments_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    """Each a traceback, or a run that went on, before: now one line and exit 2 before any data is read."""
    from benchmarks import gpu_recipe

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.setattr(gpu_recipe, "load_raw", lambda: pytest.fail("read the data"))
    argv = args if "--device" in args else [*args, "--device", "cpu"]
    try:
        code = gpu_recipe.run_cli("gpu_recipe", gpu_recipe.main, argv)
    except SystemExit as e:  # argparse's own: its usage line, then the error
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err.splitlines()[-1], err  # argparse's usage lines come first
    assert err.count("\n") == 1 or err.startswith("usage:"), err
    assert not (tmp_path / "benchmarks").exists()


def test_the_gpu_benchmark_run_as_a_module_answers_in_one_line(tmp_path):
    """`python -m benchmarks.gpu_recipe` called main() bare: a misspelt class was a 12-line traceback."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_recipe", "--classes", "cat", "dgo", "--device", "cpu"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.startswith("gpu_recipe: error: data.classes=['cat', 'dgo']: unknown class")
    assert r.stderr.count("\n") == 1, r.stderr
