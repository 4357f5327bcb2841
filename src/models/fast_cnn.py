"""A small, fast CIFAR network in the spirit of the CIFAR-10 speed-run literature (airbench):
a frozen patch-whitening first layer, three conv groups (conv, max-pool, BN, GELU, conv, BN, GELU),
global max pooling and a scaled linear head. Built for a few CPU cores: few layers, all 3x3."""
from __future__ import annotations

from collections import OrderedDict

import torch
from pydantic import Field, PositiveInt
from torch import nn

from src.models.base import LabModel, register
from src.schema import Section


class FastCNNParams(Section):
    widths: list[PositiveInt] = Field(min_length=3, max_length=3)  # channels of the three conv groups
    whiten_width: int = Field(ge=2)     # patch-whitening eigenvectors kept (x2 with negatives)
    whiten_eps: float = Field(gt=0)     # added to the eigenvalues before whitening
    scaling: float = Field(gt=0)        # logits are multiplied by this


class ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(OrderedDict(
            conv1=nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            pool=nn.MaxPool2d(2),
            bn1=nn.BatchNorm2d(c_out, momentum=0.4),  # few steps per run: let running stats catch up
            act1=nn.GELU(),
            conv2=nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            bn2=nn.BatchNorm2d(c_out, momentum=0.4),
            act2=nn.GELU(),
        ))


@register("fast_cnn", FastCNNParams, "small and fast, the CPU default")
class FastCNN(LabModel):
    def __init__(self, p: FastCNNParams, num_classes: int):
        super().__init__()
        w, ww = list(p.widths), p.whiten_width
        # 2x2 patches have 12 dims; filters are +/- eigenvectors, set by init_from_data().
        self.whiten = nn.Conv2d(3, 2 * ww, 2, padding=0, bias=True)   # (B, 2*ww, 31, 31)
        self.whiten.weight.requires_grad_(False)
        self.whiten.bias.requires_grad_(False)
        self.whiten_eps = p.whiten_eps
        self.act = nn.GELU()
        self.features = nn.Sequential(OrderedDict(
            group1=ConvGroup(2 * ww, w[0]),  # (B, w0, 15, 15)
            group2=ConvGroup(w[0], w[1]),    # (B, w1, 7, 7)
            group3=ConvGroup(w[1], w[2]),    # (B, w2, 3, 3)
        ))
        self.pool = nn.AdaptiveMaxPool2d(1)  # (B, w2, 1, 1)
        self.flatten = nn.Flatten()          # (B, w2)
        self.fc = nn.Linear(w[2], num_classes, bias=False)
        self.scaling = p.scaling

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the frozen first layer to whiten 2x2 patches of `x` (B, 3, H, W), normalised."""
        c = x.shape[1]
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1)                       # (B, 3, 31, 31, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4).double()
        patches = patches - patches.mean(0, keepdim=True)
        cov = patches.T @ patches / patches.shape[0]
        evals, evecs = torch.linalg.eigh(cov)                            # ascending
        k = self.whiten.out_channels // 2
        evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k]           # the k strongest directions
        filt = (evecs.T / torch.sqrt(evals + self.whiten_eps)[:, None]).reshape(k, c, 2, 2)
        self.whiten.weight.copy_(torch.cat([filt, -filt]).float())
        self.whiten.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 32, 32), normalised
        x = self.act(self.whiten(x))
        x = self.flatten(self.pool(self.features(x)))
        return self.fc(x) * self.scaling
