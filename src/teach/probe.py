"""Looking into a trained network with numbers: receptive fields of its conv layers, the test images
that excite a channel most (Zeiler & Fergus's view), and one output of the first conv layer as the
weighted sum a student can check by hand. Used by the visualize stage and the explorer.

Activations come from forward hooks, so every model of the registry works as it is. Receptive
fields are traced through the layers in the order they run (convolutions and poolings change them;
element-wise layers do not), which holds for the chain-shaped CNNs of this lab.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from src.errors import DataError
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


KEPT = 32  # images kept per channel by StrongestResponses.top in the evaluate stage (visualize.patch_top <= this)


class StrongestResponses:
    """Forward hooks on every conv layer of `model` that note, while `armed()`, each image's
    strongest response per channel (max over positions) and where it is. The evaluate stage arms
    them for its plain pass over the test split (on its device, in its layout), so the visualize
    stage picks its top patches without a second pass; `top_patches` arms them for a pass of its own."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [n for n, _ in conv_layers(model)]
        self.seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in self.layers}
        self.width: dict[str, int] = {}
        self._on = False
        self._hooks = [m.register_forward_hook(self._hook(n)) for n, m in conv_layers(model)]

    def _hook(self, name: str):
        def record(mod: nn.Module, inputs, out: torch.Tensor) -> None:
            if self._on:
                a = out.detach().float()  # (B, C, H, W)
                # laid out channels-last it is a (B, H*W, C) view: no copy, unlike flatten(2)
                v, idx = a.permute(0, 2, 3, 1).reshape(a.shape[0], -1, a.shape[1]).max(dim=1)  # (B, C)
                self.seen[name].append((v.cpu(), idx.cpu()))
                self.width[name] = a.shape[-1]

        return record

    @contextmanager
    def armed(self) -> Iterator[None]:
        """Record the forward passes run inside this block (and only those: not TTA's other views)."""
        self._on = True
        try:
            yield
        finally:
            self._on = False

    def close(self) -> None:
        """Remove the hooks (the model is as it was)."""
        for h in self._hooks:
            h.remove()

    def top(self, k: int = KEPT) -> dict:
        """Per layer: the `k` images with the highest strongest response, per channel, strongest
        first: {"values", "images" (test index), "positions" (flat i * width + j)}: (k, C) tensors,
        and "width"; "count" is how many images were seen. Always the same `topk` call for `k`, so
        the stage and a pass of its own break exact ties (a frozen layer on flat regions) alike."""
        out: dict = {"count": sum(len(b[0]) for b in self.seen[self.layers[0]]) if self.layers else 0}
        for n in self.layers:
            v = torch.cat([b[0] for b in self.seen[n]])  # (N, C)
            idx = torch.cat([b[1] for b in self.seen[n]])
            top_v, top_i = v.topk(min(k, v.shape[0]), dim=0)  # (k, C)
            pos = idx.gather(0, top_i)
            out[n] = {"values": top_v, "images": top_i.int(), "positions": pos.int(), "width": self.width[n]}
        return out


def select_patches(model: nn.Module, top: dict, k: int = 6, channels: int = 6, size: int = 32) -> list[TopPatches]:
    """`channels` channels per conv layer of `model` and their `k` strongest test images, from what
    `StrongestResponses.top` recorded: the channels whose k-th best response is highest (channels
    that respond to something)."""
    fields = receptive_fields(model, size)
    out = []
    for n, conv in conv_layers(model):
        t = top[n]
        top_v, top_i, flat, w = t["values"][:k], t["images"][:k], t["positions"][:k], t["width"]
        order = torch.argsort(top_v[-1], descending=True)[:channels].tolist()
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


@torch.no_grad()
def top_patches(
    model: nn.Module, x: torch.Tensor, k: int = 6, channels: int = 6, batch_size: int = 500
) -> list[TopPatches]:
    """For every conv layer: per channel, each image's strongest response (max over positions), and
    the `k` images where it is highest. `x` is normalised (N, 3, H, W). The `channels` shown per
    layer are those whose k-th best response is highest (channels that respond to something).
    Runs a channels-last copy of the model (1.5x faster on a CPU; the caller's model is untouched)."""
    copied = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()
    rec = StrongestResponses(copied)
    try:
        with rec.armed():
            for chunk in x.split(batch_size):
                copied(chunk.contiguous(memory_format=torch.channels_last))
    finally:
        rec.close()
    return select_patches(model, rec.top(max(k, KEPT)), k, channels, x.shape[-1])


def fingerprint(model: nn.Module, x: torch.Tensor) -> str:
    """A digest of `model`'s weights and buffers and of the images `x`: what the evaluate stage saw,
    so the visualize stage can tell a file from another model or test split."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())  # NCHW bytes, whatever the layout
    h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()


def read_responses(path: Path, model: nn.Module, x: torch.Tensor) -> dict:
    """The evaluate stage's recorded responses at `path` when they were recorded for `model` on the
    images `x`; a DataError naming the file and the stage to rerun when missing, unreadable or stale."""
    try:
        responses = torch.load(path, weights_only=True)
        recorded = responses.get("fingerprint")
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run dvc repro evaluate") from None
    except Exception as exc:  # cut short, or another kind of file: torch and pickle raise many types
        raise DataError(f"{path}: unreadable ({type(exc).__name__}); run dvc repro evaluate") from None
    if recorded != fingerprint(model, x):
        raise DataError(f"{path}: not this model's responses on this test split; run dvc repro evaluate")
    return responses


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
