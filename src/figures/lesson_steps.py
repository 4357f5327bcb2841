"""The theory stage's steps: the operations of a CNN computed with src.teach.ops on small numbers,
and the networks' shapes and parameter counts, each drawn (src/figures/lessons.py) and recorded.

Like src/figures/visualize_steps.py, each step yields `(file name, figure)` as it draws and returns
what it drew, for metrics/theory.json (`src.figures.run_steps`); no step reads or writes a file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from src.figures import Drawn, lessons, to_hwc
from src.params import ModelParams
from src.teach import ops

if TYPE_CHECKING:  # torch: the theory stage draws `operations` before it imports torch
    from src.data.cifar import Subset

NOTEBOOK_MODEL, NOTEBOOK_CLASSES = "seed_cnn", 10  # the lab notebook's network and its 10-class head


def operations(rng: np.random.Generator) -> Drawn:
    """Figures 1-5: ReLU, one convolution step, stride, padding, pooling, on small random integers."""
    relu_x = rng.integers(-9, 10, (4, 5)).astype(float)
    yield "1_relu.png", lessons.relu_figure(relu_x)
    conv_x = rng.integers(0, 10, (5, 5)).astype(float)
    conv_w = rng.integers(-1, 2, (3, 3)).astype(float)
    conv_b, pos = 1.0, (1, 1)
    yield "2_convolution.png", lessons.conv_step_figure(conv_x, conv_w, conv_b, pos)
    stride_x = rng.integers(0, 10, (5, 5)).astype(float)
    stride_w = rng.integers(-1, 2, (3, 3)).astype(float)
    yield "3_stride.png", lessons.stride_figure(stride_x, stride_w, stride=2, caption_n=4)
    pad_x = rng.integers(1, 10, (3, 3)).astype(float)
    pad_w = rng.integers(-1, 2, (3, 3)).astype(float)
    yield "4_padding.png", lessons.padding_figure(pad_x, pad_w, padding=1)
    fmap = rng.integers(0, 10, (4, 4)).astype(float)
    stack = rng.integers(0, 10, (3, 3, 3)).astype(float)
    small_stack = rng.integers(0, 10, (2, 2, 2)).astype(float)
    yield "5_pooling.png", lessons.pooling_figure(fmap, stack, small_stack)
    return {
        "relu": {"input": relu_x.tolist(), "output": ops.relu(relu_x).tolist()},
        "convolution": {
            "input": conv_x.tolist(),
            "kernel": conv_w.tolist(),
            "bias": conv_b,
            "output": ops.relu(ops.conv2d(conv_x, conv_w, conv_b)).tolist(),
            "position": list(pos),
        },
        "stride": {
            "n": 5,
            "f": 3,
            "s": 2,
            "output_size": ops.output_size(5, 3, 0, 2),
            "output": ops.conv2d(stride_x, stride_w, stride=2).tolist(),
            "caption_4x4_output_size": ops.output_size(4, 3, 0, 2),
        },
        "padding": {
            "n": 3,
            "f": 3,
            "p": 1,
            "output_size": ops.output_size(3, 3, 1, 1),
            "output": ops.conv2d(pad_x, pad_w, padding=1).tolist(),
        },
        "pooling": {
            "input": fmap.tolist(),
            "max": ops.max_pool2d(fmap, 2).tolist(),
            "avg": ops.avg_pool2d(fmap, 2).tolist(),
            "global_avg": ops.global_avg_pool(stack).tolist(),
            "flatten": ops.flatten(small_stack).tolist(),
        },
    }


def networks(model: ModelParams, num_classes: int) -> Drawn:
    """Figure 6: the notebook's network (10 classes) and the network this run trains, layer by layer."""
    shown = [(NOTEBOOK_MODEL, NOTEBOOK_CLASSES, "the lab notebook's network")]
    if (model.name, num_classes) != (NOTEBOOK_MODEL, NOTEBOOK_CLASSES):
        shown.append((model.name, num_classes, "the network this run trains"))
    from src.models import build_model

    tables, out = {}, {}
    for name, k, role in shown:
        if model.raw_section(name) is None and name != model.name:
            continue  # params.yaml has no section for it
        rows = ops.layer_table(build_model(model.model_copy(update={"name": name}), k))
        tables[f"{name}: {role}, {k}-class head"] = rows
        out[name if name not in out else f"{name}_{k}_classes"] = {
            "num_classes": k,
            "role": role,
            "total_params": sum(r["params"] for r in rows),
            "shapes_agree": all(r["formula_shape"] == r["torch_shape"] for r in rows),
            "layers": rows,
        }
    yield "6_network.png", lessons.network_figure(tables)
    return {"networks": out}


def real_filters(sub: Subset, index: int) -> Drawn:
    """Figure 7: hand-made edge kernels on a real CIFAR-10 test image."""
    img = sub.test_x[index].numpy()
    gray = img.astype(float).mean(axis=0) / 255.0
    kernels = {
        "vertical edge": np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], float),
        "horizontal edge": np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float),
    }
    yield "7_real_filters.png", lessons.real_filters_figure(to_hwc(img), gray, kernels)
    return {"real_image": {"test_index": index, "class": sub.classes[int(sub.test_y[index])]}}
