"""Models by name: `build_model(params.model, num_classes)`. Every file of this folder is a model
(see src/models/base.py for the one-file recipe); importing the package registers them all."""

from __future__ import annotations

import importlib
import pkgutil
import traceback
from pathlib import Path

import torch
from torch import nn

from src.errors import ModelCodeError, ParamsError
from src.models.base import (
    REGISTRY,
    LabModel,
    ModelSpec,
    NameClash,
    conv_layers,
    count_params,
    dummy_forward,
    freeze_plan,
    register,
)
from src.params import ADD_KEY_HINT, MISSING_HINT, ModelParams, check_index, did_you_mean, parse_section
from src.schema import Section

__all__ = [
    "BROKEN",
    "REGISTRY",
    "LabModel",
    "ModelSpec",
    "build_checked",
    "build_model",
    "check_model_files",
    "check_model",
    "conv_layers",
    "count_params",
    "freeze_plan",
    "model_section",
    "register",
]

HERE = Path(__file__).parent
BROKEN: dict[str, str] = {}  # model files that failed to import: file → one line (the check stage says it)
LOADED_ALL = "every file of src/models/ is loaded as a model: fix it, or move it out"


def origin(exc: BaseException) -> str:
    """'src/models/x.py:12' — the last line of a model file (not this package's own code) that `exc`
    came through, its own line for a SyntaxError; '' when it came through none."""
    if isinstance(exc, SyntaxError) and exc.filename:
        frames = [(exc.filename, exc.lineno)]
    else:
        frames = [(f.f_code.co_filename, line) for f, line in traceback.walk_tb(exc.__traceback__)]
    for name, line in reversed(frames):
        path = Path(name)
        if path.parent == HERE and path.name not in ("__init__.py", "base.py"):
            return f"src/models/{path.name}:{line}"
    return ""


def failure(exc: BaseException, file: str = "") -> str:
    """`exc` in one line: where in a model file (else `file`), its type and its message's first line."""
    msg = ((exc.msg if isinstance(exc, SyntaxError) else str(exc)) or "").strip()
    where = origin(exc) or file
    return f"{where + ': ' if where else ''}{type(exc).__name__}{': ' + msg.splitlines()[0] if msg else ''}"


for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base" and not _info.name.startswith("_"):
        _path = f"src/models/{_info.name}.py"
        try:
            importlib.import_module(f"{__name__}.{_info.name}")
        except NameClash as exc:  # names both files: the one imported second need not be the copy
            BROKEN[_path] = str(exc)
        except Exception as exc:  # a file with a mistake: one line when a model is built, not a traceback here
            BROKEN[_path] = f"{failure(exc, _path)} ({LOADED_ALL})"


def check_model_files() -> None:
    """A ModelCodeError with the first model file that failed to import, if any: every file of the
    folder is a model, so a broken one stops every run, whichever model it names."""
    if BROKEN:
        raise ModelCodeError(next(iter(BROKEN.values())))


def model_section(p: ModelParams, name: str | None = None, at: str = "model") -> Section:
    """The section `model.<name>` (the chosen model's by default) checked against the model's own
    params class, after every other model section params.yaml holds; a wrong name, key or value is
    a one-line ParamsError naming the key under `at` (`gpu.model` for the GPU recipe's values)."""
    name = name or p.name
    check_model_files()
    if name not in REGISTRY:
        allowed = ", ".join(f"{n} ({s.summary})" if s.summary else n for n, s in REGISTRY.items())
        raise ParamsError(
            f"params.yaml: {at}.name={name!r}: unknown model {name!r}{did_you_mean(name, REGISTRY)}; allowed: {allowed}"
        )
    for key, raw in (p.model_extra or {}).items():
        if key not in REGISTRY:
            hint = did_you_mean(key, REGISTRY, prefix=f"{at}.")
            raise ParamsError(
                f"params.yaml: unknown key '{at}.{key}'{hint}; model sections are named after "
                f"the models: {', '.join(REGISTRY)}"
            )
        _parse_model_section(key, raw or {}, at)
    needed = [k for k, f in REGISTRY[name].params.model_fields.items() if f.is_required()]
    if p.raw_section(name) is None and needed:  # a new model: its section is not in params.yaml yet
        raise ParamsError(
            f"params.yaml: {at}.{name}: missing; add the section with its keys ({', '.join(needed)}) to "
            f"params.yaml, or on the command line -S +{at}.{name}.{needed[0]}=… for each (DVC's + adds a key)"
        )
    return _parse_model_section(name, p.raw_section(name) or {}, at)


def _parse_model_section(name: str, raw: dict, at: str) -> Section:
    """`model.<name>` checked against the model's params class; a key it lacks is named with how to
    add it (a new model's keys are not in the committed params.yaml, which the usual hint cites)."""
    try:
        return parse_section(REGISTRY[name].params, raw, f"{at}.{name}")
    except ParamsError as e:
        line = str(e).removesuffix(MISSING_HINT)
        if line == str(e):
            raise
        key = line.removeprefix("params.yaml: ").split(":")[0]
        raise ParamsError(f"{line}{ADD_KEY_HINT}{key}=… (DVC's + adds a key)") from None


def check_model(model: nn.Module, name: str, num_classes: int | None = None) -> None:
    """What the stages after training need of a model (the check stage asks, before any runs): a
    LabModel, a Conv2d to draw, a forward pass that gives one logit per class (when `num_classes` is
    given) and feature layers that exist; else a one-line ModelCodeError."""
    where = f"{type(model).__module__}.{type(model).__qualname__} (model.name={name!r})"
    if not isinstance(model, LabModel):
        raise ModelCodeError(
            f"{where} is not a LabModel; subclass src.models.base.LabModel (init_from_data, feature_layers, "
            "freeze_stages: the recipe at the top of src/models/base.py)"
        )
    if not conv_layers(model):
        raise ModelCodeError(f"{where} has no Conv2d layer; the lab's filters, feature maps and Grad-CAM need one")
    if num_classes is not None:
        _check_forward(model, where, num_classes)
    modules = dict(model.named_modules())
    missing = [n for n in model.feature_layers() if n not in modules]
    if missing:
        raise ModelCodeError(
            f"{where}: its feature_layers() names {', '.join(map(repr, missing))}, not a module of the model; "
            f"its modules: {', '.join(n for n in modules if n)[:200]}"
        )


def check_filter_layer(model: nn.Module, index: int, name: str) -> int:
    """`visualize.deep_filter_layer` when it picks one of the model's conv layers, else a ParamsError
    naming how many convs model `name` has (the check stage asks before training, visualize after)."""
    return check_index("visualize.deep_filter_layer", index, len(conv_layers(model)), "conv layers", f"model {name}")


def _check_forward(model: nn.Module, where: str, num_classes: int) -> None:
    """A forward pass of two blank images in eval mode: an error in it, or an output that is not one
    logit per class, is a ModelCodeError (training would stop on it, or evaluation after training)."""
    shape = (2, 3, 32, 32)
    try:
        out = dummy_forward(model, batch=shape[0])
    except Exception as exc:  # the student's forward: its line, not a traceback
        raise ModelCodeError(f"{where}: its forward pass on a batch {shape} failed: {failure(exc)}") from None
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != (2, num_classes):
        raise ModelCodeError(
            f"{where}: its forward pass gives {got} for a batch {shape}; expected (2, {num_classes}): "
            f"one logit per class for each image ({num_classes} classes)"
        )


def build_model(p: ModelParams, num_classes: int) -> LabModel:
    """The network named by `p.name`, built from its own section `model.<name>`."""
    section = model_section(p)
    return REGISTRY[p.name].cls(section, num_classes)


def build_checked(p: ModelParams, num_classes: int) -> LabModel:
    """`build_model` for the check stage: an error in the model's own code (its __init__, its forward)
    or anything else `check_model` finds is one ModelCodeError line naming the model file's line."""
    section = model_section(p)
    try:
        model = REGISTRY[p.name].cls(section, num_classes)
    except ParamsError:
        raise
    except Exception as exc:
        cls = REGISTRY[p.name].cls
        where = f"{cls.__module__}.{cls.__qualname__} (model.name={p.name!r})"
        raise ModelCodeError(f"{where}: building it failed: {failure(exc)}") from None
    check_model(model, p.name, num_classes)
    return model
