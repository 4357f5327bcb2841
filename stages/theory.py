"""Stage `theory`: the operations of a CNN computed with src.theory on small numbers and drawn,
plus each network's shapes and parameter counts → plots/theory/*.png, metrics/theory.json."""
from pathlib import Path

import numpy as np

from src import theory as T
from src.data import Subset
from src.figures import to_hwc
from src.figures import theory as F
from src.io import save_figure, write_json
from src.models import build_model
from src.params import ModelParams
from stages._common import stage

OUT = Path("plots/theory")

if __name__ == "__main__":
    with stage("theory") as p:
        rng = np.random.default_rng(p.theory.seed)
        dpi = p.theory.dpi
        # 1. ReLU on a small matrix of integers
        relu_x = rng.integers(-9, 10, (4, 5)).astype(float)
        save_figure(F.relu_figure(relu_x), OUT / "1_relu.png", dpi)
        # 2. one position of a kernel sliding over a 5x5 input
        conv_x = rng.integers(0, 10, (5, 5)).astype(float)
        conv_w = rng.integers(-1, 2, (3, 3)).astype(float)
        conv_b, pos = 1.0, (1, 1)
        save_figure(F.conv_step_figure(conv_x, conv_w, conv_b, pos), OUT / "2_convolution.png", dpi)
        # 3. stride 2 on 5x5 → 2x2;  4. padding 1 on 3x3 → 3x3
        stride_x = rng.integers(0, 10, (5, 5)).astype(float)
        stride_w = rng.integers(-1, 2, (3, 3)).astype(float)
        save_figure(F.stride_figure(stride_x, stride_w, stride=2, caption_n=4), OUT / "3_stride.png", dpi)
        pad_x = rng.integers(1, 10, (3, 3)).astype(float)
        pad_w = rng.integers(-1, 2, (3, 3)).astype(float)
        save_figure(F.padding_figure(pad_x, pad_w, padding=1), OUT / "4_padding.png", dpi)
        # 5. pooling, global average pooling, flattening
        fmap = rng.integers(0, 10, (4, 4)).astype(float)
        stack = rng.integers(0, 10, (3, 3, 3)).astype(float)
        small_stack = rng.integers(0, 10, (2, 2, 2)).astype(float)
        save_figure(F.pooling_figure(fmap, stack, small_stack), OUT / "5_pooling.png", dpi)
        # 6. the networks in numbers (10 classes, as in the notebook)
        tables = {name: T.layer_table(build_model(ModelParams(name=name), 10)) for name in ("seed_cnn", "fast_cnn")}
        save_figure(F.network_figure(tables), OUT / "6_network.png", dpi)
        # 7. hand-made edge kernels on a real CIFAR-10 image
        sub = Subset.load(Path("data/subset.pt"))
        idx = p.theory.image_index % sub.test_x.shape[0]
        img = sub.test_x[idx].numpy()
        gray = img.astype(float).mean(axis=0) / 255.0
        kernels = {"vertical edge": np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], float),
                   "horizontal edge": np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)}
        save_figure(F.real_filters_figure(to_hwc(img), gray, kernels), OUT / "7_real_filters.png", dpi)

        write_json("metrics/theory.json", {
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
            "networks": {name: {"total_params": sum(r["params"] for r in rows),
                                "shapes_agree": all(r["formula_shape"] == r["torch_shape"] for r in rows),
                                "layers": rows} for name, rows in tables.items()},
            "real_image": {"test_index": int(idx), "class": sub.classes[int(sub.test_y[idx])]},
        })
        print(f"theory: {len(list(OUT.glob('*.png')))} figures in {OUT}; seed_cnn has "
              f"{sum(r['params'] for r in tables['seed_cnn']):,} parameters")
