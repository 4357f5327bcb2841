"""The numbers the lab's theory sections need that no other stage computes, each from the trained
model or the subset itself (PyTorch's own layers and forward hooks, so they agree with training)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from src.models import conv_layers
from src.teach import ops
from src.teach.probe import conv_sum

ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid)


def _conv_output_shape(model: nn.Module, conv: nn.Conv2d, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
    got: dict = {}
    h = conv.register_forward_hook(lambda m, i, o: got.__setitem__("shape", tuple(o.shape[1:])))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        h.remove()
    return got["shape"]


def dense_vs_conv(model: nn.Module, input_shape: tuple[int, int, int] = (3, 32, 32), hidden: int = 512) -> dict:
    """Section I: the parameters of this network's first conv layer against a dense layer on the
    same flattened input that gives as many outputs (and one of a modest `hidden` width). The dense
    layers are PyTorch's nn.Linear built on the meta device (counted, never allocated)."""
    name, conv = conv_layers(model)[0]
    out_shape = _conv_output_shape(model, conv, input_shape)
    inputs, outputs = int(np.prod(input_shape)), int(np.prod(out_shape))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {
        "input_shape": list(input_shape),
        "inputs": inputs,
        "conv_layer": name,
        "conv_kernel": list(conv.weight.shape),
        "conv_output_shape": list(out_shape),
        "conv_outputs": outputs,
        "conv_params": count(conv),
        "dense_same_outputs_params": count(nn.Linear(inputs, outputs, device="meta")),
        "hidden": hidden,
        "dense_hidden_params": count(nn.Linear(inputs, hidden, device="meta")),
        "weights_per_conv_output": int(np.prod(conv.weight.shape[1:])),
    }


def network_table(model: nn.Module) -> dict:
    """Sections XII and "The network": the trained model's layers in forward order, the output size
    from the formula and from PyTorch, each layer's parameters (src.teach.ops.layer_table), and the
    activations it uses."""
    layers = ops.layer_table(model)
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, ACTIVATIONS)}
    return {
        "layers": layers,
        "total_params": sum(r["params"] for r in layers),
        "activations": sorted(kinds),
        "has_batchnorm": any(isinstance(m, nn.BatchNorm2d) for m in model.modules()),
    }


def until_activation(layers: list[dict], name: str) -> list[str]:
    """The types of the layers between `name` and the next activation (what a conv's sum passes
    through before f is applied); empty when the activation follows at once."""
    names = [r["layer"] for r in layers]
    between = []
    for r in layers[names.index(name) + 1 :] if name in names else []:
        if r["type"] in {a.__name__ for a in ACTIVATIONS}:
            return between
        between.append(r["type"])
    return between


def normalised_pixel(image_u8: torch.Tensor, mean: list[float], std: list[float], i: int = 0, j: int = 0) -> dict:
    """Section III: one pixel (i, j) of a uint8 image (3, H, W) before and after normalisation
    ((v/255 − mean)/std per channel), and where 0 and 255 land."""
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    raw = image_u8[:, i, j].numpy().astype(np.float64)
    return {
        "i": i,
        "j": j,
        "raw": raw.astype(int).tolist(),
        "scaled": (raw / 255).tolist(),
        "normalised": ((raw / 255 - m) / s).tolist(),
        "black": ((0 - m) / s).tolist(),
        "white": ((1 - m) / s).tolist(),
        "mean": m.tolist(),
        "std": s.tolist(),
    }


def first_learned_conv(model: nn.Module) -> str:
    """The first conv layer whose weights were trained (a frozen whitening layer is skipped)."""
    convs = conv_layers(model)
    return next((n for n, m in convs if m.weight.requires_grad), convs[0][0])


@torch.no_grad()
def strongest_neuron(model: nn.Module, x: torch.Tensor, layer: str | None = None) -> dict:
    """Section IV: the output of `layer` (the first learned conv layer by default) at the centre of
    its map, in the channel that responds most there, written out term by term (src.teach.probe)."""
    layer = layer or first_learned_conv(model)
    conv = dict(conv_layers(model))[layer]
    got: dict = {}
    h = conv.register_forward_hook(lambda m, i, o: got.__setitem__("out", o.detach().clone().float()))
    try:
        model.eval()(x[None].float())
    finally:
        h.remove()
    out = got["out"][0]  # (C, H, W)
    i, j = out.shape[1] // 2, out.shape[2] // 2
    channel = int(out[:, i, j].argmax())
    r = conv_sum(model, x, channel, i, j, layer=layer)
    by_channel = r["products"].reshape(r["products"].shape[0], -1).sum(axis=1)
    return {
        **{
            k: r[k]
            for k in ("layer", "channel", "i", "j", "kernel", "stride", "padding", "bias", "sum", "torch", "has_bias")
        },
        "out_shape": list(r["out_shape"]),
        "window": r["window"],
        "weights": r["weights"],
        "products": r["products"],
        "by_channel": by_channel.tolist(),
        "terms": int(r["products"].size),
    }


@torch.no_grad()
def batchnorm_before_after(model: nn.Module, x: torch.Tensor) -> dict | None:
    """Section XI: the first BatchNorm2d of the trained model in eval mode, its input and output
    captured by a forward hook on a batch `x` (normalised); the channel shown is the one whose
    input lies furthest from mean 0/std 1, where BN's work is easiest to see. None for a network
    without BatchNorm."""
    found = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)), None)
    if found is None:
        return None
    name, bn = found
    got: dict = {}
    # clones: the ReLU(inplace=True) after a BatchNorm (seed_cnn) overwrites its output in place
    h = bn.register_forward_hook(
        lambda m, i, o: got.update(inp=i[0].detach().clone().float(), out=o.detach().clone().float())
    )
    try:
        model.eval()(x.float())
    finally:
        h.remove()
    before = got["inp"].transpose(0, 1).flatten(1)  # (C, B·H·W)
    after = got["out"].transpose(0, 1).flatten(1)
    far = before.mean(1).abs() + (before.std(1) - 1).abs()
    c = int(far.argmax())
    return {
        "layer": name,
        "channel": c,
        "channels": int(before.shape[0]),
        "values": int(before.shape[1]),
        "images": int(x.shape[0]),
        "before": before[c].numpy(),
        "after": after[c].numpy(),
        "before_mean": float(before[c].mean()),
        "before_std": float(before[c].std()),
        "after_mean": float(after[c].mean()),
        "after_std": float(after[c].std()),
        "running_mean": float(bn.running_mean[c]),
        "running_var": float(bn.running_var[c]),
        "gamma": float(bn.weight[c]),
        "beta": float(bn.bias[c]),
        "eps": float(bn.eps),
    }


def mixup_example(images_u8: torch.Tensor, labels: torch.Tensor, classes: list[str], alpha: float, seed: int) -> dict:
    """Section XI: two training images of different classes blended as MixUp blends them in
    training (src.data.augment.mixup: λ·a + (1 − λ)·b, λ ~ Beta(α, α)), and the blended label (λ on
    one class, 1 − λ on the other). λ is the first seeded draw between 0.25 and 0.75 (`draws` says
    how many it took), so both images can be seen."""
    rng = np.random.default_rng(seed)
    a = int(rng.integers(len(labels)))
    others = np.flatnonzero(labels.numpy() != int(labels[a]))
    b = int(others[rng.integers(len(others))])
    draws = 1
    lam = float(rng.beta(alpha, alpha))
    while not 0.25 <= lam <= 0.75 and draws < 1000:  # most draws of Beta(α < 1) lie near 0 or 1: show one that blends
        lam, draws = float(rng.beta(alpha, alpha)), draws + 1
    pair = images_u8[[a, b]].float() / 255  # (2, 3, H, W) in [0, 1]
    label = np.zeros(len(classes))
    label[int(labels[a])] += lam
    label[int(labels[b])] += 1 - lam
    return {
        "indices": [a, b],
        "classes": [classes[int(labels[a])], classes[int(labels[b])]],
        "lam": lam,
        "alpha": alpha,
        "draws": draws,
        "images": pair,
        "mixed": lam * pair[0] + (1 - lam) * pair[1],
        "label": label.tolist(),
    }
