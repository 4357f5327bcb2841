"""Models by name: `build_model(params.model, num_classes)`. Every file of this folder is a model
(see src/models/base.py for the one-file recipe); importing the package registers them all."""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from src.errors import ParamsError
from src.models.base import REGISTRY, LabModel, ModelSpec, conv_layers, count_params, freeze_plan, register
from src.params import ModelParams, did_you_mean, parse_section
from src.schema import Section

__all__ = [
    "REGISTRY",
    "LabModel",
    "ModelSpec",
    "build_model",
    "check_model",
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
    needed = [k for k, f in REGISTRY[name].params.model_fields.items() if f.is_required()]
    if p.raw_section(name) is None and needed:  # a new model: its section is not in params.yaml yet
        raise ParamsError(
            f"params.yaml: {at}.{name}: missing; add the section with its keys ({', '.join(needed)}) to "
            f"params.yaml, or on the command line -S +{at}.{name}.{needed[0]}=… for each (DVC's + adds a key)"
        )
    return parse_section(REGISTRY[name].params, p.raw_section(name) or {}, f"{at}.{name}")


def check_model(model: nn.Module, name: str) -> None:
    """What the stages after training need of a model (the check stage asks, before any runs): a
    LabModel, a Conv2d to draw, and feature layers that exist; else a one-line ParamsError."""
    where = f"params.yaml: model.name={name!r}: {type(model).__module__}.{type(model).__qualname__}"
    if not isinstance(model, LabModel):
        raise ParamsError(
            f"{where} is not a LabModel; subclass src.models.base.LabModel (init_from_data, feature_layers, "
            "freeze_stages: the recipe at the top of src/models/base.py)"
        )
    if not conv_layers(model):
        raise ParamsError(f"{where} has no Conv2d layer; the lab's filters, feature maps and Grad-CAM need one")
    modules = dict(model.named_modules())
    missing = [n for n in model.feature_layers() if n not in modules]
    if missing:
        raise ParamsError(
            f"{where}.feature_layers() names {', '.join(map(repr, missing))}, not a module of the model; "
            f"its modules: {', '.join(n for n in modules if n)[:200]}"
        )


def build_model(p: ModelParams, num_classes: int) -> LabModel:
    """The network named by `p.name`, built from its own section `model.<name>`."""
    section = model_section(p)
    return REGISTRY[p.name].cls(section, num_classes)
