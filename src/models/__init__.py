"""Models built by name: `build_model(params.model, num_classes)`."""
from __future__ import annotations

from typing import Callable

from torch import nn

from src.models.fast_cnn import FastCNN
from src.models.seed_cnn import SeedCNN

REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "fast_cnn": lambda num_classes, cfg: FastCNN(num_classes, cfg.widths, cfg.whiten_width, cfg.scaling),
    "seed_cnn": lambda num_classes, cfg: SeedCNN(num_classes, cfg.widths, cfg.kernels, cfg.dropout2d, cfg.dropout),
}


def build_model(model_params, num_classes: int) -> nn.Module:
    """Build the network named by `model_params.name` with its own section of params."""
    name = model_params.name
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(REGISTRY)}")
    return REGISTRY[name](num_classes, getattr(model_params, name))


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Named Conv2d layers in forward order (for filters, feature maps and Grad-CAM)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def init_from_data(model: nn.Module, model_params, train_x, mean, std, n: int = 5000) -> None:
    """Data-dependent initialisation (the fast net's patch-whitening layer); a no-op for others."""
    if hasattr(model, "init_whitening"):
        from src.augment import normalize

        model.init_whitening(normalize(train_x[:n], mean.cpu(), std.cpu()), eps=model_params.fast_cnn.whiten_eps)
