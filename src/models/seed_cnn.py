"""The lab notebook's network, layer for layer: six Conv-BN-ReLU blocks, two average pools,
Dropout2d, global average pooling, Dropout, Linear. 4,079,429 parameters for 10 classes."""

from __future__ import annotations

from collections import OrderedDict

import torch
from pydantic import Field, PositiveInt
from torch import nn

from src.models.base import LabModel, register
from src.schema import Section


class SeedCNNParams(Section):
    widths: list[PositiveInt] = Field(min_length=6, max_length=6)  # the six conv blocks' channels
    kernels: list[PositiveInt] = Field(min_length=6, max_length=6)  # their kernel sizes ("same" padding)
    dropout2d: float = Field(ge=0, le=1)  # after each of the two average pools
    dropout: float = Field(ge=0, le=1)  # before the final Linear


def conv_block(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),  # BN follows: no bias
            bn=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(inplace=True),
        )
    )


@register("seed_cnn", SeedCNNParams, "the notebook's 4.08 M-parameter net")
class SeedCNN(LabModel):
    def __init__(self, p: SeedCNNParams, num_classes: int):
        super().__init__()
        w, k = list(p.widths), list(p.kernels)
        self.features = nn.Sequential(
            OrderedDict(
                block1=conv_block(3, w[0], k[0]),  # (B, 64, 32, 32)
                block2=conv_block(w[0], w[1], k[1]),  # (B, 119, 32, 32)
                pool1=nn.AvgPool2d(2),  # (B, 119, 16, 16)
                drop1=nn.Dropout2d(p.dropout2d),
                block3=conv_block(w[1], w[2], k[2]),  # (B, 221, 16, 16)
                block4=conv_block(w[2], w[3], k[3]),  # (B, 256, 16, 16)
                pool2=nn.AvgPool2d(2),  # (B, 256, 8, 8)
                drop2=nn.Dropout2d(p.dropout2d),
                block5=conv_block(w[3], w[4], k[4]),  # (B, 256, 8, 8)
                block6=conv_block(w[4], w[5], k[5]),  # (B, 256, 8, 8)
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)  # (B, 256, 1, 1)
        self.flatten = nn.Flatten()  # (B, 256)
        self.dropout = nn.Dropout(p.dropout)
        self.fc = nn.Linear(w[5], num_classes)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 32, 32), normalised
        return self.fc(self.dropout(self.flatten(self.pool(self.features(x)))))
