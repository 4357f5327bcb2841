"""Stage `theory`: the operations of a CNN computed with src.theory on small numbers and drawn,
plus the networks' shapes and parameter counts → plots/theory/*.png, metrics/theory.json."""
from pathlib import Path

import numpy as np

from src import theory as T
from src.data import Subset
from src.figures import to_hwc
from src.figures import theory as F
from src.io import save_figure, write_json
from src.models import build_model
from src.params import Params
from stages._common import run_stage

OUT = Path("plots/theory")
NOTEBOOK_MODEL, NOTEBOOK_CLASSES = "seed_cnn", 10  # the lab notebook's network and its 10-class head


def operations(rng: np.random.Generator, dpi: int) -> dict:
    """Figures 1-5: ReLU, one convolution step, stride, padding, pooling, on small random integers."""
    relu_x = rng.integers(-9, 10, (4, 5)).astype(float)
    save_figure(F.relu_figure(relu_x), OUT / "1_relu.png", dpi)
    conv_x = rng.integers(0, 10, (5, 5)).astype(float)
    conv_w = rng.integers(-1, 2, (3, 3)).astype(float)
    conv_b, pos = 1.0, (1, 1)
    save_figure(F.conv_step_figure(conv_x, conv_w, conv_b, pos), OUT / "2_convolution.png", dpi)
    stride_x = rng.integers(0, 10, (5, 5)).astype(float)
    stride_w = rng.integers(-1, 2, (3, 3)).astype(float)
    save_figure(F.stride_figure(stride_x, stride_w, stride=2, caption_n=4), OUT / "3_stride.png", dpi)
    pad_x = rng.integers(1, 10, (3, 3)).astype(float)
    pad_w = rng.integers(-1, 2, (3, 3)).astype(float)
    save_figure(F.padding_figure(pad_x, pad_w, padding=1), OUT / "4_padding.png", dpi)
    fmap = rng.integers(0, 10, (4, 4)).astype(float)
    stack = rng.integers(0, 10, (3, 3, 3)).astype(float)
    small_stack = rng.integers(0, 10, (2, 2, 2)).astype(float)
    save_figure(F.pooling_figure(fmap, stack, small_stack), OUT / "5_pooling.png", dpi)
    return {
        "relu": {"input": relu_x.tolist(), "output": T.relu(relu_x).tolist()},
        "convolution": {"input": conv_x.tolist(), "kernel": conv_w.tolist(), "bias": conv_b,
                        "output": T.relu(T.conv2d(conv_x, conv_w, conv_b)).tolist(), "position": list(pos)},
        "stride": {"n": 5, "f": 3, "s": 2, "output_size": T.output_size(5, 3, 0, 2),
                   "output": T.conv2d(stride_x, stride_w, stride=2).tolist(),
                   "caption_4x4_output_size": T.output_size(4, 3, 0, 2)},
        "padding": {"n": 3, "f": 3, "p": 1, "output_size": T.output_size(3, 3, 1, 1),
                    "output": T.conv2d(pad_x, pad_w, padding=1).tolist()},
        "pooling": {"input": fmap.tolist(), "max": T.max_pool2d(fmap, 2).tolist(),
                    "avg": T.avg_pool2d(fmap, 2).tolist(), "global_avg": T.global_avg_pool(stack).tolist(),
                    "flatten": T.flatten(small_stack).tolist()},
    }


def networks(p: Params, num_classes: int, dpi: int) -> dict:
    """Figure 6: the notebook's network (10 classes) and the network this run trains, layer by layer."""
    shown = [(NOTEBOOK_MODEL, NOTEBOOK_CLASSES, "the lab notebook's network")]
    if (p.model.name, num_classes) != (NOTEBOOK_MODEL, NOTEBOOK_CLASSES):
        shown.append((p.model.name, num_classes, "the network this run trains"))
    tables, out = {}, {}
    for name, k, role in shown:
        if p.model.raw_section(name) is None and name != p.model.name:
            continue  # params.yaml has no section for it
        rows = T.layer_table(build_model(p.model.model_copy(update={"name": name}), k))
        tables[f"{name}: {role}, {k}-class head"] = rows
        out[name if name not in out else f"{name}_{k}_classes"] = {
            "num_classes": k, "role": role, "total_params": sum(r["params"] for r in rows),
            "shapes_agree": all(r["formula_shape"] == r["torch_shape"] for r in rows), "layers": rows}
    save_figure(F.network_figure(tables), OUT / "6_network.png", dpi)
    return {"networks": out}


def real_filters(sub: Subset, index: int, dpi: int) -> dict:
    """Figure 7: hand-made edge kernels on a real CIFAR-10 test image."""
    idx = index % sub.test_x.shape[0]
    img = sub.test_x[idx].numpy()
    gray = img.astype(float).mean(axis=0) / 255.0
    kernels = {"vertical edge": np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], float),
               "horizontal edge": np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)}
    save_figure(F.real_filters_figure(to_hwc(img), gray, kernels), OUT / "7_real_filters.png", dpi)
    return {"real_image": {"test_index": int(idx), "class": sub.classes[int(sub.test_y[idx])]}}


def main(p: Params) -> None:
    t = p.theory
    sub = Subset.load(Path("data/subset.pt"))
    out = operations(np.random.default_rng(t.seed), t.dpi)
    out.update(networks(p, len(sub.classes), t.dpi))
    out.update(real_filters(sub, t.image_index, t.dpi))
    write_json("metrics/theory.json", out)
    counts = ", ".join(f"{n} {d['total_params']:,}" for n, d in out["networks"].items())
    print(f"theory: {len(list(OUT.glob('*.png')))} figures in {OUT}; parameters: {counts}")


if __name__ == "__main__":
    run_stage("theory", main)
