"""A small, fast CIFAR network in the spirit of the CIFAR-10 speed-run literature (airbench):
a patch-whitening first layer (set from the data's k×k patches, then trained or kept frozen),
three conv groups (conv, max-pool, BN, GELU, conv, BN, GELU; ReLU instead of GELU, there and
after the whitening layer, as an option), global max pooling and a scaled linear head. Built for
a few CPU cores: few layers, all small kernels."""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from src.models.base import LabModel, register
from src.schema import Section

Activation = Literal["gelu", "relu"]  # after each BatchNorm and the whitening layer


class FastCNNParams(Section):
    widths: list[PositiveInt] = Field(min_length=3, max_length=3)  # channels of the three conv groups
    whiten_kernel: int = Field(ge=2, le=5)  # side of the first layer's patches (k×k×3 RGB kernels)
    whiten_width: int = Field(ge=2)  # patch-whitening eigenvectors kept (x2 with negatives)
    whiten_trainable: bool  # train the first layer from its whitening start (learned RGB filters)
    whiten_eps: float = Field(gt=0)  # added to the eigenvalues before whitening
    scaling: float = Field(gt=0)  # logits are multiplied by this
    identity_init: bool  # conv filters start as identities (Dirac) on the channels they can pass through
    activation: Activation  # the non-linearity after each BatchNorm and the whitening layer

    @model_validator(mode="after")
    def _width_fits_kernel(self) -> FastCNNParams:
        dims = 3 * self.whiten_kernel**2
        if self.whiten_width > dims:
            raise ValueError(
                f"whiten_width={self.whiten_width}: a {self.whiten_kernel}x{self.whiten_kernel}x3 "
                f"patch has {dims} directions; allowed: 2..{dims}"
            )
        return self


def _activation(name: Activation) -> nn.Module:
    # not in place: the figures' forward hooks keep the outputs of the layers before it
    return {"gelu": nn.GELU, "relu": nn.ReLU}[name]()


class ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, activation: Activation):
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                pool=nn.MaxPool2d(2),
                bn1=nn.BatchNorm2d(c_out, momentum=0.4),  # few steps per run: let running stats catch up
                act1=_activation(activation),
                conv2=nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                bn2=nn.BatchNorm2d(c_out, momentum=0.4),
                act2=_activation(activation),
            )
        )


@register("fast_cnn", FastCNNParams, "small and fast, the CPU default")
class FastCNN(LabModel):
    def __init__(self, p: FastCNNParams, num_classes: int):
        super().__init__()
        w, ww, k = list(p.widths), p.whiten_width, p.whiten_kernel
        # filters are +/- eigenvectors of the patches' covariance, set by init_from_data()
        self.whiten = nn.Conv2d(3, 2 * ww, k, padding=0, bias=True)  # (B, 2*ww, 33-k, 33-k)
        self.whiten.weight.requires_grad_(p.whiten_trainable)
        self.whiten.bias.requires_grad_(p.whiten_trainable)
        self.whiten_eps = p.whiten_eps
        self.act = _activation(p.activation)
        self.features = nn.Sequential(
            OrderedDict(
                group1=ConvGroup(2 * ww, w[0], p.activation),  # (B, w0, 15, 15) for k = 2 or 3
                group2=ConvGroup(w[0], w[1], p.activation),  # (B, w1, 7, 7)
                group3=ConvGroup(w[1], w[2], p.activation),  # (B, w2, 3, 3)
            )
        )
        self.pool = nn.AdaptiveMaxPool2d(1)  # (B, w2, 1, 1)
        self.flatten = nn.Flatten()  # (B, w2)
        self.fc = nn.Linear(w[2], num_classes, bias=False)
        self.scaling = p.scaling
        if p.identity_init:
            for group in self.features:
                for conv in (group.conv1, group.conv2):  # (c_out, c_in, 3, 3), c_out >= c_in
                    nn.init.dirac_(conv.weight.data[: conv.in_channels])

    def freeze_stages(self) -> list[nn.Module]:
        """The conv groups; the first with the whitening layer before it (frozen unless trained)."""
        g = self.features
        return [nn.ModuleList([self.whiten, g.group1]), g.group2, g.group3]

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the first layer to whiten the k×k patches of `x` (B, 3, H, W), normalised."""
        c, k = x.shape[1], self.whiten.kernel_size[0]
        h, w = x.shape[2] - k + 1, x.shape[3] - k + 1
        # one row per patch coordinate (channel, dy, dx), one column per patch: whole shifted planes
        # copied at once, 2.5x faster than unfolding to (patch, coordinate) rows, the same covariance
        shifts = [(ch, dy, dx) for ch in range(c) for dy in range(k) for dx in range(k)]
        rows = torch.stack([x[:, ch, dy : dy + h, dx : dx + w] for ch, dy, dx in shifts])
        rows = rows.reshape(c * k * k, -1).double()  # (3k², B·h·w)
        rows -= rows.mean(1, keepdim=True)
        cov = rows @ rows.T / rows.shape[1]
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        n = self.whiten.out_channels // 2
        evals, evecs = evals.flip(0)[:n], evecs.flip(1)[:, :n]  # the n strongest directions
        filt = (evecs.T / torch.sqrt(evals + self.whiten_eps)[:, None]).reshape(n, c, k, k)
        self.whiten.weight.copy_(torch.cat([filt, -filt]).float())
        self.whiten.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 32, 32), normalised
        x = self.act(self.whiten(x))
        x = self.flatten(self.pool(self.features(x)))
        return self.fc(x) * self.scaling
