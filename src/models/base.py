"""What every model provides, and the registry that finds models by name.

A model is one file in src/models/ that declares its params section and registers itself:

    class TinyParams(Section):                     # its section of params.yaml: model.tiny
        width: int = Field(ge=1)

    @register("tiny", TinyParams, "one line: what it is")   # listed where model.name is unknown
    class Tiny(LabModel):
        def __init__(self, p: TinyParams, num_classes: int): ...
        def forward(self, x): ...                  # (B, 3, 32, 32) normalised → (B, num_classes)

`src/models/__init__.py` imports every file of the folder, so `model.name` accepts the new name and
training, evaluation, the figures and the theory table work with it unchanged: they use only the
interface of `LabModel` below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from src.errors import ParamsError
from src.schema import Section


class LabModel(nn.Module):
    """The interface the pipeline relies on, beside `forward`.

    - `init_from_data(x)`: data-dependent initialisation before training, given normalised training
      images (N, 3, 32, 32); nothing by default.
    - `feature_layers()`: names of the modules whose outputs the figures show as feature maps, in
      forward order. The default finds them: every pooling layer and every block (a Sequential
      holding a Conv2d directly), or each Conv2d that sits in no such block; a block that ends in
      its pool is shown once, as the block.
    - `freeze_stages()`: the parts `train.freeze_at` can stop training, input side first. The
      default: the blocks (a Sequential holding a Conv2d directly) in forward order.
    Filters and Grad-CAM use the model's Conv2d layers (`conv_layers`); a conv whose weight does not
    require grad is drawn as "not learned". With `train.optimizer: muon`, Muon trains the convs a
    BatchNorm follows (`normalised_convs`) and SGD the rest; a model with none trains with SGD alone.
    """

    def init_from_data(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation; nothing by default."""

    def _block_names(self) -> list[str]:
        """Blocks: every Sequential that holds a Conv2d directly."""
        return [
            name
            for name, m in self.named_modules()
            if isinstance(m, nn.Sequential) and any(isinstance(c, nn.Conv2d) for c in m.children())
        ]

    def feature_layers(self) -> list[str]:
        blocks = set(self._block_names())
        in_block = lambda name: any(name.startswith(b + ".") for b in blocks)  # noqa: E731
        wanted = [
            name
            for name, m in self.named_modules()
            if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))
            or name in blocks
            or (isinstance(m, nn.Conv2d) and not in_block(name))
        ]
        return forward_order(self, wanted, distinct=True)

    def freeze_stages(self) -> list[nn.Module]:
        """What `train.freeze_at` freezes, one stage per fraction, input side first. Freezing from the
        input side is what saves time: no stage before a trained one needs its backward pass."""
        mods = dict(self.named_modules())
        return [mods[n] for n in forward_order(self, self._block_names())]


def forward_order(model: nn.Module, names: list[str], distinct: bool = False) -> list[str]:
    """`names` sorted by when each module's forward finishes on a dummy 32×32 input. `distinct`: of
    modules that return the very same tensor (a block that ends in its pool, and that pool), only the
    outermost, which finishes last."""
    done: list[tuple[str, torch.Tensor]] = []  # the outputs kept alive, so their ids stay unique
    mods = dict(model.named_modules())
    dummy_forward(model, [mods[n].register_forward_hook(lambda m, i, o, n=n: done.append((n, o))) for n in names])
    last = {id(o): n for n, o in done}  # each output's last (outermost) module
    return list(dict.fromkeys(n for n, o in done if not distinct or last[id(o)] == n))


# between a conv and a normalisation, these keep its output's scale out of the result (positively homogeneous)
_SCALE_KEEPING = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.ReLU,
    nn.LeakyReLU,
    nn.PReLU,
)
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)


def normalised_convs(model: nn.Module) -> list[str]:
    """The Conv2d layers whose every output a normalisation layer takes (through pooling, dropout or
    ReLU modules, which keep its scale), in forward order: the scale of their weights does not change
    the net's output, which Muon's per-step rescaling of each filter bank relies on. Followed tensor
    by tensor on a dummy input: a function between a conv and its BatchNorm (F.gelu) or a residual
    sum makes a new tensor, so that conv is left out, as it is after any other module that changes
    its input in place (nn.SiLU(inplace=True)); an in-place function in `forward` (x.relu_()) is not seen."""
    names = {id(m): n for n, m in model.named_modules()}
    source: dict[int, str] = {}  # id of a tensor → the conv whose output it is, scaled by its weights alone
    kept: list[torch.Tensor] = []  # alive until the end, so no id is reused
    calls: dict[str, int] = {}
    fed: dict[str, int] = {}

    def after(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            calls[names[id(m)]] = calls.get(names[id(m)], 0) + 1
            source[id(out)] = names[id(m)]
        elif not isinstance(m, _SCALE_KEEPING):  # a module that rewrote its input in place: no longer the conv's
            source.pop(id(out), None)
        elif inputs and id(inputs[0]) in source:  # a scale-keeping module passes its input's source on
            source[id(out)] = source[id(inputs[0])]
        kept.append(out)

    def before(m: nn.Module, inputs: tuple) -> None:
        if inputs and id(inputs[0]) in source:
            fed[source[id(inputs[0])]] = fed.get(source[id(inputs[0])], 0) + 1

    # every leaf module (to see one rewrite a conv's output in place), and every conv: one with a
    # parametrization (weight_norm) holds modules of its own
    hooked = [m for m in model.modules() if isinstance(m, nn.Conv2d) or not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(after) for m in hooked if not isinstance(m, _NORMS)]
    hooks += [m.register_forward_pre_hook(before) for m in hooked if isinstance(m, _NORMS)]
    dummy_forward(model, hooks)
    return [n for n, k in calls.items() if fed.get(n, 0) == k]


def dummy_forward(model: nn.Module, hooks: Sequence = (), batch: int = 1) -> object:
    """The output of one forward pass of `batch` zero 32×32 images in eval mode, without gradients;
    the model's train/eval mode restored and the hooks removed after it, even when it fails."""
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            p = next(model.parameters(), torch.zeros(()))  # the dummy on the model's device, in its dtype
            return model(torch.zeros(batch, 3, 32, 32, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params: type[Section]
    cls: Callable[[Section, int], LabModel]
    summary: str


REGISTRY: dict[str, ModelSpec] = {}


class NameClash(ValueError):
    """A second class registered under a model name another one has (a model file copied, not renamed)."""


def _file(module: str) -> str:
    """`src.models.x` → `src/models/x.py`; another module's name as it is."""
    return module.replace(".", "/") + ".py" if module.startswith("src.models.") else module


def register(name: str, params: type[Section], summary: str = ""):
    """Class decorator: make the model buildable as `model.name: <name>` with section `model.<name>`;
    `summary` describes it where an unknown `model.name` lists the models."""

    def add(cls):
        known = REGISTRY.get(name)
        # the same class registered again (a notebook cell run twice) replaces itself; another one is a clash
        if known is not None and (known.cls.__module__, known.cls.__qualname__) != (cls.__module__, cls.__qualname__):
            a, b = (f"{_file(c.__module__)} ({c.__qualname__})" for c in (known.cls, cls))
            raise NameClash(f"model name {name!r} is registered by two files, {a} and {b}: rename one in its @register")
        REGISTRY[name] = ModelSpec(name, params, cls, summary)
        return cls

    return add


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Named Conv2d layers in forward order (for filters, feature maps and Grad-CAM)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def freeze_plan(model: nn.Module, fractions: list[float]) -> list[tuple[float, nn.Module]]:
    """`train.freeze_at`'s fractions paired with the model's stages, input side first
    (`freeze_stages`); more fractions than the model has stages is a ParamsError."""
    if not fractions:
        return []
    stages = model.freeze_stages() if hasattr(model, "freeze_stages") else []  # traced on the host
    if len(fractions) > len(stages):
        raise ParamsError(
            f"params.yaml: train.freeze_at={list(fractions)}: {len(fractions)} fractions, but this model "
            f"has {len(stages)} stage(s) to freeze; allowed: at most {len(stages)}"
        )
    return list(zip(fractions, stages))


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
