"""The optimizer and its one-cycle schedule, as pure functions of the step (so a time budget can
size the schedule after training has started, and a resumed run picks up exactly where it was)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from src.models.base import normalised_convs
from src.training.runtime import has_native_bf16

if TYPE_CHECKING:
    from src.params import TrainParams


def _anneal(start: float, end: float, pct: float, how: str) -> float:
    """From `start` (pct=0) to `end` (pct=1), by a cosine or a straight line (as OneCycleLR)."""
    if how == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def _phase(step: int, total: int, pct_start: float) -> tuple[bool, float]:
    """(in the rising phase?, progress within that phase) of OneCycleLR's two phases."""
    up_end = float(pct_start * total) - 1
    if step <= up_end:
        return True, step / up_end if up_end > 0 else 1.0
    return False, min(1.0, (step - up_end) / max(total - 1 - up_end, 1e-12))


def one_cycle(
    step: int,
    total: int,
    peak: float,
    pct_start: float,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: str = "cos",
) -> float:
    """The value of torch's OneCycleLR (two phases) at `step` of `total`."""
    initial = peak / div_factor
    rising, pct = _phase(step, total, pct_start)
    if rising:
        return _anneal(initial, peak, pct, anneal)
    return _anneal(peak, initial / final_div_factor, pct, anneal)


def cycle_momentum(
    step: int, total: int, pct_start: float, base: float = 0.85, top: float = 0.95, anneal: str = "cos"
) -> float:
    """OneCycleLR's momentum: top → base while the lr rises, back to top while it falls."""
    rising, pct = _phase(step, total, pct_start)
    return _anneal(top, base, pct, anneal) if rising else _anneal(base, top, pct, anneal)


def make_optimizer(model: nn.Module, tc: TrainParams, muon_convs: list[str] | None = None) -> torch.optim.Optimizer:
    """Nesterov SGD, AdamW, or Muon for conv filters with Nesterov SGD for the rest. `muon_convs`:
    the convs Muon may take (default: `normalised_convs(model)`, traced here)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if tc.optimizer == "muon":
        # Muon: the filter banks a normalisation follows (it rescales them every step); the rest, and
        # a conv that feeds no BatchNorm (fast_cnn's trainable whitening layer), SGD
        mods = dict(model.named_modules())
        scale_free = {id(mods[n].weight) for n in (normalised_convs(model) if muon_convs is None else muon_convs)}
        filters = [p for p in params if id(p) in scale_free]
        rest = _sgd_groups(model, [p for p in params if id(p) not in scale_free], tc)
        if not filters:  # no BatchNorm after any conv (a student's model): nothing for Muon, all SGD
            return torch.optim.SGD(rest, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov)
        return MuonSGD(
            filters, rest, tc.lr, tc.muon_lr, tc.lr * tc.max_lr_factor, tc.momentum, tc.nesterov, tc.muon_momentum
        )
    if tc.optimizer == "sgd":
        return torch.optim.SGD(_sgd_groups(model, params, tc), lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov)
    return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)


def _sgd_groups(model: nn.Module, params: list[nn.Parameter], tc: TrainParams) -> list[dict]:
    """One group, or two when BatchNorm biases get their own lr: factor × the schedule's, with the
    weight decay divided by it so that lr × decay (the shrink per step) stays the rest's."""
    if tc.bn_bias_lr_factor == 1.0:
        return [{"params": params, "weight_decay": tc.weight_decay}]
    norm = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
    biases = {id(m.bias) for m in model.modules() if isinstance(m, norm) and m.bias is not None}
    f = tc.bn_bias_lr_factor
    return [
        {"params": [p for p in params if id(p) not in biases], "weight_decay": tc.weight_decay},
        {"params": [p for p in params if id(p) in biases], "weight_decay": tc.weight_decay / f, "lr_scale": f},
    ]


def set_hparams(opt: torch.optim.Optimizer, tc: TrainParams, step: int, total: int) -> float:
    """Set the schedule's lr (and cycled momentum) for `step` of `total`; returns the lr."""
    lr = one_cycle(step, total, tc.lr * tc.max_lr_factor, tc.pct_start, tc.div_factor, tc.final_div_factor, tc.anneal)
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
        if tc.cycle_momentum and g.get("cycle_momentum", True):
            m = cycle_momentum(step, total, tc.pct_start, anneal=tc.anneal)
            if "betas" in g:
                g["betas"] = (m, g["betas"][1])
            else:
                g["momentum"] = m
    return lr


def _as_matrix(p: torch.Tensor) -> torch.Tensor:
    """A conv filter bank (O, I, kh, kw) as the (O, I*kh*kw) matrix Muon orthogonalises, sharing
    its storage (a channels_last filter is viewed in (O, kh, kw, I) order: the same rows)."""
    if p.is_contiguous():
        return p.view(p.shape[0], -1)
    return p.permute(0, 2, 3, 1).view(p.shape[0], -1)  # channels_last storage


def newton_schulz(g: torch.Tensor, dtype: torch.dtype, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Muon's orthogonalisation of the matrix `g`: torch.optim.Muon's quintic Newton-Schulz
    iteration and coefficients, computed in `dtype`. torch's is fixed at bf16, which a CPU without
    native bf16 (an AVX2 laptop's) emulates: for fast_cnn's filters that took 830 ms a step against
    27 ms in fp32 on a 2-core AVX2 EPYC, and halved the training images/s."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = g.size(0) > g.size(1)
    x = g.to(dtype).T if tall else g.to(dtype)
    x = x / x.norm().clamp(min=eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update (Nesterov momentum, orthogonalised, lr × sqrt(max(1, rows/cols)))
    with the orthogonalisation in bf16 where it is native (Ampere or newer GPUs, AVX512-BF16/AMX CPUs), else fp32."""

    def __init__(self, params, lr: float, momentum: float, nesterov: bool, ns_dtype: torch.dtype):
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov})
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            mom = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - mom)
                update = p.grad.lerp(buf, mom) if group["nesterov"] else buf
                scale = max(1.0, p.shape[0] / p.shape[1]) ** 0.5
                p.add_(newton_schulz(update, self.ns_dtype), alpha=-group["lr"] * scale)


def muon_dtype(device: torch.device) -> torch.dtype:
    """bf16 for the orthogonalisation where the hardware runs it natively, fp32 elsewhere."""
    return torch.bfloat16 if has_native_bf16(device) else torch.float32


class MuonSGD(torch.optim.Optimizer):
    """Muon (`Muon` above: torch.optim.Muon's update, in fp32 where bf16 is not native) for the conv
    filters, Nesterov SGD for everything else, as one optimizer: the speed-run recipe (Keller
    Jordan's airbench94_muon). Muon sees each filter bank as
    a matrix that shares the filter's storage; each bank is rescaled to norm sqrt(out channels) before
    its step (a BatchNorm follows each of these convs, so the scale is free and the effective lr stays
    put; `make_optimizer` gives Muon only such convs, `normalised_convs`).
    The schedule sets every group's lr as schedule × `lr_scale` (Muon's: muon_lr / sgd peak lr).
    `filters`: the conv filter banks; `sgd_groups`: the SGD part's parameter groups, each with its
    weight decay (`_sgd_groups`); `muon_momentum`: the filters' momentum (None: `momentum`)."""

    def __init__(
        self,
        filters: list[nn.Parameter],
        sgd_groups: list[dict],
        lr: float,
        muon_lr: float,
        peak_lr: float,
        momentum: float,
        nesterov: bool,
        muon_momentum: float | None = None,
    ):
        self.filters = filters
        self.matrices = [nn.Parameter(_as_matrix(p.detach())) for p in filters]  # views: same storage
        self.sgd = torch.optim.SGD(sgd_groups, lr=lr, momentum=momentum, nesterov=nesterov)
        dtype = muon_dtype(filters[0].device) if filters else torch.float32
        mm = momentum if muon_momentum is None else muon_momentum
        self.muon = Muon(self.matrices, lr=muon_lr, momentum=mm, nesterov=nesterov, ns_dtype=dtype)
        for g in self.sgd.param_groups:
            g.setdefault("lr_scale", 1.0)
        self.muon.param_groups[0]["lr_scale"] = muon_lr / peak_lr
        self.muon.param_groups[0]["cycle_momentum"] = muon_momentum is None  # its own momentum stays put
        super().__init__(filters + [p for g in sgd_groups for p in g["params"]], {"lr": lr})
        self.param_groups = self.sgd.param_groups + self.muon.param_groups  # what the schedule sets

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for p, m in zip(self.filters, self.matrices):
            if p.grad is not None:
                g = (
                    p.grad
                    if p.grad.stride() == p.stride()
                    else p.grad.contiguous(
                        memory_format=torch.contiguous_format if p.is_contiguous() else torch.channels_last
                    )
                )
                m.grad = _as_matrix(g)
                m.mul_(m.shape[0] ** 0.5 / m.norm().clamp_min(1e-12))
        self.sgd.step()
        self.muon.step()
        for m in self.matrices:
            m.grad = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sgd.zero_grad(set_to_none)
        for p in self.filters:
            p.grad = None

    def state_dict(self) -> dict:
        return {"sgd": self.sgd.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sgd.load_state_dict(state["sgd"])
        self.muon.load_state_dict(state["muon"])
        self.param_groups = self.sgd.param_groups + self.muon.param_groups


class Lookahead:
    """Lookahead as the speed runs use it (hlb-cifar10, airbench): every `every` steps the weights
    (and BatchNorm statistics) move to an exponential average of themselves, the average's weight
    decay**every × (progress)³ — nothing early on, more and more towards the end; the last step
    leaves the model at the average."""

    def __init__(self, model: nn.Module, every: int, decay: float):
        self.every, self.decay = every, decay
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int, total: int) -> None:
        """Call after optimizer step number `step` (1-based) of `total`."""
        last = step >= total
        if step % self.every and not last:
            return
        keep = 1.0 if last else self.decay**self.every * (step / total) ** 3
        for k, v in model.state_dict().items():
            if k in self.avg:
                self.avg[k].lerp_(v, 1.0 - keep)
                v.copy_(self.avg[k])

    def state_dict(self) -> dict:
        return dict(self.avg)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            self.avg[k].copy_(v)
