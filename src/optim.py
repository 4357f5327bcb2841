"""The optimizer and its one-cycle schedule, as pure functions of the step (so a time budget can
size the schedule after training has started, and a resumed run picks up exactly where it was)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

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


def one_cycle(step: int, total: int, peak: float, pct_start: float, div_factor: float = 25.0,
              final_div_factor: float = 1e4, anneal: str = "cos") -> float:
    """The value of torch's OneCycleLR (two phases) at `step` of `total`."""
    initial = peak / div_factor
    rising, pct = _phase(step, total, pct_start)
    if rising:
        return _anneal(initial, peak, pct, anneal)
    return _anneal(peak, initial / final_div_factor, pct, anneal)


def cycle_momentum(step: int, total: int, pct_start: float, base: float = 0.85, top: float = 0.95,
                   anneal: str = "cos") -> float:
    """OneCycleLR's momentum: top → base while the lr rises, back to top while it falls."""
    rising, pct = _phase(step, total, pct_start)
    return _anneal(top, base, pct, anneal) if rising else _anneal(base, top, pct, anneal)


def make_optimizer(model: nn.Module, tc: "TrainParams") -> torch.optim.Optimizer:
    """Nesterov SGD or AdamW over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if tc.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov,
                               weight_decay=tc.weight_decay)
    return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)


def set_hparams(opt: torch.optim.Optimizer, tc: "TrainParams", step: int, total: int) -> float:
    """Set the schedule's lr (and cycled momentum) for `step` of `total`; returns the lr."""
    lr = one_cycle(step, total, tc.lr * tc.max_lr_factor, tc.pct_start, tc.div_factor,
                   tc.final_div_factor, tc.anneal)
    for g in opt.param_groups:
        g["lr"] = lr
        if tc.cycle_momentum:
            m = cycle_momentum(step, total, tc.pct_start, anneal=tc.anneal)
            if "betas" in g:
                g["betas"] = (m, g["betas"][1])
            else:
                g["momentum"] = m
    return lr
