"""Models by name: `build_model(params.model, num_classes)`. Every file of this folder is a model
(see src/models/base.py for the one-file recipe); importing the package registers them all."""

from __future__ import annotations

import importlib
import pkgutil

from src.errors import ParamsError
from src.models.base import REGISTRY, LabModel, ModelSpec, conv_layers, count_params, freeze_plan, register
from src.params import ModelParams, did_you_mean, parse_section
from src.schema import Section

__all__ = [
    "REGISTRY",
    "LabModel",
    "ModelSpec",
    "build_model",
    "conv_layers",
    "count_params",
    "freeze_plan",
    "model_section",
    "register",
]

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")


def model_section(p: ModelParams, name: str | None = None, at: str = "model") -> Section:
    """The section `model.<name>` (the chosen model's by default) checked against the model's own
    params class, after every other model section params.yaml holds; a wrong name, key or value is
    a one-line ParamsError naming the key under `at` (`gpu.model` for the GPU recipe's values)."""
    name = name or p.name
    if name not in REGISTRY:
        raise ParamsError(
            f"params.yaml: {at}.name={name!r}: unknown model {name!r}{did_you_mean(name, REGISTRY)}; "
            f"allowed: {', '.join(REGISTRY)}"
        )
    for key, raw in (p.model_extra or {}).items():
        if key not in REGISTRY:
            hint = did_you_mean(key, REGISTRY, prefix=f"{at}.")
            raise ParamsError(
                f"params.yaml: unknown key '{at}.{key}'{hint}; model sections are named after "
                f"the models: {', '.join(REGISTRY)}"
            )
        parse_section(REGISTRY[key].params, raw or {}, f"{at}.{key}")
    return parse_section(REGISTRY[name].params, p.raw_section(name) or {}, f"{at}.{name}")


def build_model(p: ModelParams, num_classes: int) -> LabModel:
    """The network named by `p.name`, built from its own section `model.<name>`."""
    section = model_section(p)
    return REGISTRY[p.name].cls(section, num_classes)
