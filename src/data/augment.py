"""Batched augmentation on uint8/float tensors, on whatever device the batch lives on.

Random numbers come from an explicit `torch.Generator`, so a run is reproducible step by step
(and after a resume) without touching global RNG state, and nothing here waits for the device
(no `.item()`): on a GPU the batch never leaves it. AutoAugment is src/data/autoaugment.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from src.data.autoaugment import AutoAugmentCIFAR10


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator, mode: str = "reflect") -> torch.Tensor:
    """Pad by `padding` and crop back at a random offset per image (one gather for the batch)."""
    if padding == 0:
        return x
    b, c, h, w = x.shape
    xp = F.pad(
        x.float() if mode == "reflect" else x, (padding,) * 4, mode="reflect" if mode == "reflect" else "constant"
    ).to(x.dtype)
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=gen.device).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=gen.device).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows, cols]  # (B, C, H, W)


def random_hflip(x: torch.Tensor, gen: torch.Generator, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 (or where the bool mask `flip` (B,) says)."""
    if flip is None:
        flip = (torch.rand(x.shape[0], generator=gen, device=gen.device) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def alternating_flips(n: int, seed: int, device: torch.device) -> torch.Tensor:
    """Per training image, whether it is mirrored in even epochs (a random half); odd epochs mirror
    the other half. Every image is seen both ways in any two epochs in a row, which is worth more
    than flipping at random when a run lasts a few epochs (Jordan, "94% on CIFAR-10 in 3.29 s")."""
    g = torch.Generator().manual_seed(seed * 104_729 + 17)
    return (torch.rand(n, generator=g) < 0.5).to(device)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero one `size`x`size` square per image at a random centre (may overlap the border)."""
    if size == 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=gen, device=gen.device).to(x.device)
    cx = torch.randint(0, w, (b,), generator=gen, device=gen.device).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    y0, x0 = (c[:, None, None] - size // 2 for c in (cy, cx))  # the square's corner: `size` rows from it, even or odd
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return x.masked_fill(inside[:, None], 0)


def augment_batch(
    x: torch.Tensor,
    cfg,
    gen: torch.Generator,
    autoaugment: AutoAugmentCIFAR10 | None = None,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """The configured training transform on a uint8 batch: flip, crop, AutoAugment, cutout.
    Pass one `AutoAugmentCIFAR10` for a whole run, so its tables are built once; with
    `hflip: alternate` the training loop passes the batch's `flip` mask (else flips are random)."""
    if cfg.hflip:
        x = random_hflip(x, gen, flip if cfg.hflip == "alternate" else None)
    x = random_crop(x, cfg.crop_padding, gen, cfg.crop_pad_mode)
    if cfg.autoaugment:
        x = (autoaugment or AutoAugmentCIFAR10())(x, gen)
    return cutout(x, cfg.cutout, gen)


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, gen: torch.Generator) -> torch.Tensor:
    """Per image, on a normalised float batch: add a shift drawn from U(-brightness, brightness)
    (in each channel's standard deviations), then scale by 1 + U(-contrast, contrast) about 0 —
    the data set's mean colour, not the image's own. The shift is scaled too, so it reaches
    brightness × (1 + contrast). With both 0 it returns `x` and draws nothing, so runs without it
    keep their random stream."""
    if brightness == 0 and contrast == 0:
        return x
    b = x.shape[0]
    shift = (torch.rand(b, generator=gen, device=gen.device) * 2 - 1).to(x.device) * brightness
    scale = 1 + (torch.rand(b, generator=gen, device=gen.device) * 2 - 1).to(x.device) * contrast
    return (x + shift.view(b, 1, 1, 1).to(x.dtype)) * scale.view(b, 1, 1, 1).to(x.dtype)


def mixup(
    x: torch.Tensor, y: torch.Tensor, lam: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixUp with weight `lam` (drawn by the caller on the host, from Beta(α, α)): returns
    (λx + (1-λ)x[perm], y, y[perm]); the permutation is drawn on the batch's device."""
    perm = torch.randperm(x.shape[0], generator=gen, device=gen.device).to(x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm]
