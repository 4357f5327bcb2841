"""The report's own computations, as a figure step (src.figures.Drawn): the theory additions of
src.lab_report.additions drawn by src.figures.training_aids, their numbers returned JSON-ready."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from src.data.cifar import Subset, normalize
from src.figures import Drawn
from src.figures import training_aids as aids
from src.lab_report import additions


def _rounded(a: np.ndarray, digits: int = 6) -> list:
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


def theory_additions(
    model: nn.Module,
    sub: Subset,
    mean: list[float],
    std: list[float],
    image_index: int,
    bn_images: int,
    mixup_alpha: float,
    seed: int,
) -> Drawn:
    """Sections I, III, IV, XI and XII: dense vs conv parameters, a pixel normalised, one neuron of
    the first learned conv layer term by term, BatchNorm before/after, a MixUp pair, the trained
    network's layer table."""
    dense = additions.dense_vs_conv(model)
    yield "1_dense_vs_conv.png", aids.dense_vs_conv_figure(dense)
    image = sub.train_x[0]
    i, j = image.shape[1] // 2, image.shape[2] // 2
    pixel = additions.normalised_pixel(image, mean, std, i, j)
    yield "3_normalisation.png", aids.normalisation_figure(image, pixel, sub.train_x[:2000])
    m, s = torch.tensor(mean), torch.tensor(std)
    neuron = additions.strongest_neuron(model, normalize(sub.test_x[image_index : image_index + 1], m, s)[0])
    bn = additions.batchnorm_before_after(model, normalize(sub.test_x[:bn_images], m, s))
    if bn is not None:
        yield "11_batchnorm.png", aids.batchnorm_figure(bn)
    mix = additions.mixup_example(sub.train_x, sub.train_y, sub.classes, mixup_alpha, seed)
    yield "11_mixup.png", aids.mixup_figure(mix, sub.classes)
    network = additions.network_table(model)
    neuron_out = {k: v for k, v in neuron.items() if k not in ("window", "weights", "products")}
    neuron_out.update(
        test_index=image_index,
        test_class=sub.classes[int(sub.test_y[image_index])],
        then=additions.until_activation(network["layers"], neuron["layer"]),
        window=_rounded(neuron["window"]),
        weights=_rounded(neuron["weights"]),
        products=_rounded(neuron["products"]),
    )
    return {
        "network": network,
        "dense_vs_conv": dense,
        "pixel": pixel,
        "neuron": neuron_out,
        "batchnorm": bn and {k: v for k, v in bn.items() if k not in ("before", "after")},
        "mixup": {k: v for k, v in mix.items() if k not in ("images", "mixed")},
    }
