"""The lab notebook's network, layer for layer: six Conv-BN-ReLU blocks, two average pools,
Dropout2d, global average pooling, Dropout, Linear. 4,079,429 parameters for 10 classes."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def conv_block(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),  # BN follows: no bias
        bn=nn.BatchNorm2d(c_out),
        relu=nn.ReLU(inplace=True),
    ))


class SeedCNN(nn.Module):
    def __init__(self, num_classes: int = 10, widths=(64, 119, 221, 256, 256, 256),
                 kernels=(5, 5, 3, 5, 3, 5), dropout2d: float = 0.1, dropout: float = 0.38):
        super().__init__()
        w, k = list(widths), list(kernels)
        self.features = nn.Sequential(OrderedDict(
            block1=conv_block(3, w[0], k[0]),        # (B, 64, 32, 32)
            block2=conv_block(w[0], w[1], k[1]),     # (B, 119, 32, 32)
            pool1=nn.AvgPool2d(2),                   # (B, 119, 16, 16)
            drop1=nn.Dropout2d(dropout2d),
            block3=conv_block(w[1], w[2], k[2]),     # (B, 221, 16, 16)
            block4=conv_block(w[2], w[3], k[3]),     # (B, 256, 16, 16)
            pool2=nn.AvgPool2d(2),                   # (B, 256, 8, 8)
            drop2=nn.Dropout2d(dropout2d),
            block5=conv_block(w[3], w[4], k[4]),     # (B, 256, 8, 8)
            block6=conv_block(w[4], w[5], k[5]),     # (B, 256, 8, 8)
        ))
        self.pool = nn.AdaptiveAvgPool2d(1)          # (B, 256, 1, 1)
        self.flatten = nn.Flatten()                  # (B, 256)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(w[5], num_classes)       # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 32, 32), normalised
        return self.fc(self.dropout(self.flatten(self.pool(self.features(x)))))
