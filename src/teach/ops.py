"""The operations of a CNN, from scratch in NumPy, written to be read like a textbook.

Each function computes what its torch.nn.functional twin computes (the tests check that on random
inputs), but with the loops in plain sight:

    output size:   N' = floor((N - F + 2P) / S) + 1
    convolution:   Y[o, i, j] = b[o] + Σ_c Σ_u Σ_v  W[o, c, u, v] · X[c, i·S + u, j·S + v]
    ReLU:          f(z) = max(0, z)
    pooling:       the max (or mean) of each K×K window, moved by the stride
"""

from __future__ import annotations

import numpy as np


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def output_size(n: int, f: int, p: int = 0, s: int = 1) -> int:
    """Spatial size after a convolution or pooling window: floor((n - f + 2p) / s) + 1.

    n: input size, f: window (kernel) size, p: zero padding on each side, s: stride. Like PyTorch,
    a stride that does not divide (n - f + 2p) drops the last, incomplete window (the floor).
    """
    n = _check_int("n (input size)", n, 1)
    f = _check_int("f (kernel size)", f, 1)
    p = _check_int("p (padding)", p, 0)
    s = _check_int("s (stride)", s, 1)
    if f > n + 2 * p:
        raise ValueError(
            f"f (kernel size) = {f} is larger than the padded input n + 2p = {n + 2 * p}: the output size would be <= 0"
        )
    return (n - f + 2 * p) // s + 1


def pad2d(x: np.ndarray, p: int) -> np.ndarray:
    """Zero padding of the last two axes by p on every side."""
    if p == 0:
        return x
    width = [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)]
    return np.pad(x, width, mode="constant", constant_values=0)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: int = 1, padding: int = 0) -> np.ndarray:
    """2-D convolution as PyTorch computes it (cross-correlation: the kernel is not flipped).

    x: (C, H, W) or (H, W) for one channel. w: (O, C, kh, kw), or (kh, kw) for one input and one
    output channel. b: (O,) or a scalar. Returns (O, H', W'), or (H', W') when x and w are 2-D.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    squeeze = x.ndim == 2 and w.ndim == 2
    if x.ndim == 2:
        x = x[None]
    if w.ndim == 2:
        w = w[None, None]
    if x.ndim != 3:
        raise ValueError(f"x must be (C, H, W) or (H, W), got shape {x.shape}")
    if w.ndim != 4:
        raise ValueError(f"w must be (O, C, kh, kw) or (kh, kw), got shape {w.shape}")
    c, h, wd = x.shape
    o, cw, kh, kw = w.shape
    if cw != c:
        raise ValueError(f"w has {cw} input channels but x has {c}")
    stride = _check_int("stride", stride, 1)
    padding = _check_int("padding", padding, 0)
    bias = np.zeros(o) if b is None else np.broadcast_to(np.asarray(b, dtype=np.float64), (o,))
    h_out, w_out = output_size(h, kh, padding, stride), output_size(wd, kw, padding, stride)
    xp = pad2d(x, padding)
    y = np.empty((o, h_out, w_out))
    for i in range(h_out):
        for j in range(w_out):
            # the receptive field of output (i, j): every input channel, a kh x kw window
            patch = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kw]  # (C, kh, kw)
            y[:, i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2])) + bias  # Σ w·x + b
    return y[0] if squeeze else y


def uses_per_pixel(n: int, f: int, p: int = 0, s: int = 1) -> np.ndarray:
    """How many outputs of a convolution each pixel of an n×n input feeds: add 1 over every
    receptive field (on the padded input), then drop the padding."""
    out = output_size(n, f, p, s)
    counts = np.zeros((n + 2 * p, n + 2 * p))
    for i in range(out):
        for j in range(out):
            counts[i * s : i * s + f, j * s : j * s + f] += 1
    return counts[p : p + n, p : p + n]


def relu(x: np.ndarray) -> np.ndarray:
    """max(0, x), element by element."""
    return np.maximum(np.asarray(x, dtype=np.float64), 0.0)


def _pool(x: np.ndarray, k: int, stride: int | None, reduce) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (2, 3):
        raise ValueError(f"x must be (C, H, W) or (H, W), got shape {x.shape}")
    k = _check_int("k (window size)", k, 1)
    s = k if stride is None else _check_int("stride", stride, 1)  # PyTorch: stride defaults to k
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    c, h, w = x.shape
    h_out, w_out = output_size(h, k, 0, s), output_size(w, k, 0, s)
    y = np.empty((c, h_out, w_out))
    for i in range(h_out):
        for j in range(w_out):
            window = x[:, i * s : i * s + k, j * s : j * s + k]  # (C, k, k)
            y[:, i, j] = reduce(window.reshape(c, -1), axis=1)
    return y[0] if squeeze else y


def max_pool2d(x: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
    """The largest value of each k×k window (stride defaults to k: windows side by side)."""
    return _pool(x, k, stride, np.max)


def avg_pool2d(x: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
    """The mean of each k×k window (stride defaults to k)."""
    return _pool(x, k, stride, np.mean)


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """(C, H, W) → (C,): each feature map becomes its mean (what AdaptiveAvgPool2d(1) does)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"x must be (C, H, W), got shape {x.shape}")
    return x.mean(axis=(1, 2))


def flatten(x: np.ndarray) -> np.ndarray:
    """All values in one vector, row by row, channel after channel (C·H·W,)."""
    return np.asarray(x, dtype=np.float64).reshape(-1)


# ----------------------------------------------------------------------------- a network in numbers


def layer_table(model, input_shape: tuple[int, int, int] = (3, 32, 32)) -> list[dict]:
    """Every leaf layer of `model` in forward order: the output shape predicted with `output_size`,
    the shape PyTorch really produces (forward hooks), and the layer's own parameter count."""
    import torch
    from torch import nn

    rows: list[dict] = []
    hooks = []
    pred = list(input_shape)  # (C, H, W), then (F,) after flattening

    def window(m):
        as_int = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731
        return as_int(m.kernel_size), as_int(m.padding), as_int(m.stride)

    def hook(name):
        def fn(m, inp, out):
            nonlocal pred
            if isinstance(m, nn.Conv2d):
                f, p, s = window(m)
                pred = [m.out_channels, output_size(pred[1], f, p, s), output_size(pred[2], f, p, s)]
            elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                f, p, s = window(m)
                pred = [pred[0], output_size(pred[1], f, p, s), output_size(pred[2], f, p, s)]
            elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                pred = [pred[0], 1, 1]
            elif isinstance(m, nn.Flatten):
                pred = [int(np.prod(pred))]
            elif isinstance(m, nn.Linear):
                pred = [m.out_features]
            rows.append(
                {
                    "layer": name,
                    "type": type(m).__name__,
                    "formula_shape": list(pred),
                    "torch_shape": list(out.shape[1:]),
                    "params": sum(p.numel() for p in m.parameters(recurse=False)),
                }
            )

        return fn

    for name, m in model.named_modules():
        if len(list(m.children())) == 0:
            hooks.append(m.register_forward_hook(hook(name)))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return rows
