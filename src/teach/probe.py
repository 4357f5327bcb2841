"""Looking into a trained network with numbers: receptive fields of its conv layers, the test images
that excite a channel most (Zeiler & Fergus's view), and one output of the first conv layer as the
weighted sum a student can check by hand. Used by the visualize stage and the explorer.

Activations come from forward hooks, so every model of the registry works as it is. Receptive
fields are traced through the layers in the order they run (convolutions and poolings change them;
element-wise layers do not), which holds for the chain-shaped CNNs of this lab.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from src.models import conv_layers


@dataclass(frozen=True)
class Field:
    """Where output (i, j) of a layer looks in the input: rows/cols start + i·jump, `size` wide."""

    size: int
    jump: int
    start: float  # centre of output (0, 0) in input pixels; may lie outside the image (padding)

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), right/bottom exclusive, in input pixels (may leave the image)."""
        top = int(round(self.start + i * self.jump - (self.size - 1) / 2))
        left = int(round(self.start + j * self.jump - (self.size - 1) / 2))
        return top, left, top + self.size, left + self.size


def _window(m: nn.Module) -> tuple[int, int, int]:
    one = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731
    return one(m.kernel_size), one(m.stride or m.kernel_size), one(m.padding)


@torch.no_grad()
def receptive_fields(model: nn.Module, size: int = 32) -> dict[str, Field]:
    """The receptive field of every Conv2d's output, traced through the layers in forward order."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: order.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))
    ]
    was = model.training
    try:
        model.eval()
        model(torch.zeros(1, 3, size, size))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    names = {m: n for n, m in model.named_modules()}
    field, out = Field(1, 1, 0.0), {}
    for m in order:
        k, s, p = _window(m)
        field = Field(field.size + (k - 1) * field.jump, field.jump * s, field.start + ((k - 1) / 2 - p) * field.jump)
        if isinstance(m, nn.Conv2d):
            out[names[m]] = field
    return out


@dataclass
class TopPatches:
    """For each channel of one conv layer: the test images whose strongest response is highest."""

    layer: str
    field: Field
    channels: list[int]
    images: np.ndarray  # (channels, k) test index, strongest first
    positions: np.ndarray  # (channels, k, 2) (i, j) of that response in the layer's output
    values: np.ndarray  # (channels, k) the response
    learned: bool


@torch.no_grad()
def top_patches(
    model: nn.Module, x: torch.Tensor, k: int = 6, channels: int = 6, batch_size: int = 500
) -> list[TopPatches]:
    """For every conv layer: per channel, each image's strongest response (max over positions), and
    the `k` images where it is highest. `x` is normalised (N, 3, H, W). The `channels` shown per
    layer are those whose k-th best response is highest (channels that respond to something).
    Runs a channels-last copy of the model (1.5x faster on a CPU; the caller's model is untouched)."""
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    convs = conv_layers(model)
    fields = receptive_fields(model, x.shape[-1])
    best: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per image: (max value, flat argmax) (N, C)
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: captured.__setitem__(n, o.detach().float())) for n, m in convs
    ]
    model.eval()
    try:
        for chunk in x.split(batch_size):
            model(chunk.contiguous(memory_format=torch.channels_last))
            for n, a in captured.items():
                v, idx = a.flatten(2).max(dim=2)  # (B, C)
                prev = best.get(n)
                best[n] = (v, idx) if prev is None else (torch.cat([prev[0], v]), torch.cat([prev[1], idx]))
    finally:
        for h in hooks:
            h.remove()
    out = []
    for n, conv in convs:
        v, idx = best[n]  # (N, C)
        kk = min(k, v.shape[0])
        top_v, top_i = v.topk(kk, dim=0)  # (k, C), strongest first
        order = torch.argsort(top_v[-1], descending=True)[:channels].tolist()
        w = captured[n].shape[-1]
        flat = idx.gather(0, top_i)  # (k, C)
        out.append(
            TopPatches(
                layer=n,
                field=fields[n],
                channels=order,
                images=top_i[:, order].T.numpy(),
                positions=np.stack([(flat[:, order] // w).T.numpy(), (flat[:, order] % w).T.numpy()], axis=-1),
                values=top_v[:, order].T.numpy(),
                learned=conv.weight.requires_grad,
            )
        )
    return out


def crop(image_u8: torch.Tensor, box: tuple[int, int, int, int]) -> np.ndarray:
    """The (H, W, 3) patch of a uint8 image (3, H, W) under `box`; outside the image is black (padding)."""
    top, left, bottom, right = box
    h, w = image_u8.shape[-2:]
    patch = np.zeros((bottom - top, right - left, 3), dtype=np.uint8)
    t, l_, b, r = max(top, 0), max(left, 0), min(bottom, h), min(right, w)
    if b > t and r > l_:
        patch[t - top : b - top, l_ - left : r - left] = image_u8[:, t:b, l_:r].permute(1, 2, 0).numpy()
    return patch


@torch.no_grad()
def conv_sum(model: nn.Module, x: torch.Tensor, channel: int, i: int, j: int, layer: str | None = None) -> dict:
    """Output (channel, i, j) of a conv layer (the first one, or the one named `layer`) for one
    normalised image x (3, H, W): the window of the layer's own input it reads (zeros where it hangs
    over the padding), the layer's weights and bias, the products term by term, the sum computed
    from scratch (src.teach.ops.conv2d on that window) and PyTorch's value."""
    from src.teach import ops

    convs = dict(conv_layers(model))
    name = layer or next(iter(convs))
    if name not in convs:
        raise KeyError(f"{name!r} is not a conv layer of this model; conv layers: {', '.join(convs)}")
    conv = convs[name]
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    got: dict = {}
    # clones: a later in-place layer (ReLU(inplace=True)) may overwrite the tensors the hook saw
    h = conv.register_forward_hook(
        lambda m, inp, o: got.update(inp=inp[0].detach().clone(), out=o.detach().clone().float())
    )
    try:
        model.eval()
        model(x[None].float())
    finally:
        h.remove()
    torch_value = float(got["out"][0, channel, i, j])
    padded = ops.pad2d(got["inp"][0].double().numpy(), p)  # (C, H+2p, W+2p)
    window = padded[:, i * s : i * s + k, j * s : j * s + k]  # (C, k, k)
    w = conv.weight[channel].detach().double().numpy()  # (C, k, k)
    b = float(conv.bias[channel]) if conv.bias is not None else 0.0
    ours = float(ops.conv2d(window, w[None], b)[0, 0, 0])
    return {
        "layer": name,
        "channel": channel,
        "i": i,
        "j": j,
        "kernel": k,
        "stride": s,
        "padding": p,
        "box": (i * s - p, j * s - p, i * s - p + k, j * s - p + k),
        "window": window,
        "weights": w,
        "bias": b,
        "products": window * w,
        "sum": ours,
        "torch": torch_value,
        "out_shape": tuple(got["out"].shape[1:]),
        "has_bias": conv.bias is not None,
    }
