"""The schema of params.yaml: every key typed, ranged and documented, checked before a stage runs.

A wrong value raises :class:`ParamsError` with one line naming the key, the value and what is
allowed; stages print that line and exit non-zero before touching any output.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # what the notebook hard-codes
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
TRAIN_PER_CLASS_MAX = 5000
TEST_PER_CLASS_MAX = 1000
MODEL_NAMES = ("fast_cnn", "seed_cnn")


class ParamsError(ValueError):
    """A params.yaml value that is not allowed; the message is one line for the user."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DownloadParams(_Section):
    url: str = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    md5: str = Field("c58f30108f718f92721af3b95e74349a", pattern=r"^[0-9a-f]{32}$")
    retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(2.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)


class DataParams(_Section):
    classes: Union[Literal["all"], list[str]] = "all"
    train_per_class: Optional[int] = Field(None, ge=1)
    val_per_class: int = Field(500, ge=1)
    test_per_class: Optional[int] = Field(None, ge=1, le=TEST_PER_CLASS_MAX)
    seed: int = Field(0, ge=0)
    normalize: Union[Literal["computed", "cifar10"], list[list[float]]] = "computed"

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, v: Any) -> Any:
        if v == "all":
            return v
        seen: set[str] = set()
        for name in v:
            if name not in CIFAR10_CLASSES:
                hint = difflib.get_close_matches(name, CIFAR10_CLASSES, n=1)
                more = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ValueError(f"unknown class {name!r}{more}; allowed: {', '.join(CIFAR10_CLASSES)} or 'all'")
            if name in seen:
                raise ValueError(f"class {name!r} is listed twice")
            seen.add(name)
        if len(v) < 2:
            raise ValueError(f"needs at least 2 classes, got {len(v)}")
        return v

    @field_validator("normalize")
    @classmethod
    def _check_normalize(cls, v: Any) -> Any:
        if isinstance(v, list):
            if len(v) != 2 or any(len(row) != 3 for row in v) or any(s <= 0 for s in v[1]):
                raise ValueError("must be 'computed', 'cifar10' or [[mean r,g,b], [std r,g,b]] with std > 0")
        return v

    @model_validator(mode="after")
    def _check_counts(self) -> "DataParams":
        avail = TRAIN_PER_CLASS_MAX - self.val_per_class
        if avail < 1:
            raise ValueError(f"val_per_class={self.val_per_class} leaves no training images "
                             f"(each class has {TRAIN_PER_CLASS_MAX})")
        if self.train_per_class is not None and self.train_per_class > avail:
            raise ValueError(f"train_per_class={self.train_per_class} is more than the data holds: "
                             f"{TRAIN_PER_CLASS_MAX} per class minus val_per_class={self.val_per_class} "
                             f"leaves {avail}")
        return self

    @property
    def class_names(self) -> list[str]:
        return list(CIFAR10_CLASSES) if self.classes == "all" else list(self.classes)


class AugmentParams(_Section):
    hflip: bool = True
    crop_padding: int = Field(4, ge=0, le=16)
    crop_pad_mode: Literal["reflect", "zeros"] = "reflect"
    cutout: int = Field(0, ge=0, le=32)
    autoaugment: bool = False
    mixup_alpha: float = Field(0.0, ge=0)


class FastCNNParams(_Section):
    widths: list[int] = Field([64, 128, 256], min_length=3, max_length=3)
    whiten_width: int = Field(12, ge=2)  # patch-whitening eigenvectors kept (x2 with negatives)
    whiten_eps: float = Field(5e-4, gt=0)
    scaling: float = Field(1 / 9, gt=0)

    @field_validator("widths")
    @classmethod
    def _pos(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("every width must be >= 1")
        return v


class SeedCNNParams(_Section):
    widths: list[int] = Field([64, 119, 221, 256, 256, 256], min_length=6, max_length=6)
    kernels: list[int] = Field([5, 5, 3, 5, 3, 5], min_length=6, max_length=6)
    dropout2d: float = Field(0.1, ge=0, le=1)
    dropout: float = Field(0.38, ge=0, le=1)


class ModelParams(_Section):
    name: str = "fast_cnn"
    fast_cnn: FastCNNParams = FastCNNParams()
    seed_cnn: SeedCNNParams = SeedCNNParams()

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in MODEL_NAMES:
            hint = difflib.get_close_matches(v, MODEL_NAMES, n=1)
            more = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"unknown model {v!r}{more}; allowed: {', '.join(MODEL_NAMES)}")
        return v


class TrainParams(_Section):
    epochs: int = Field(10, ge=1)
    time_budget_s: Optional[float] = Field(None, gt=0)
    batch_size: int = Field(256, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.03, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    max_lr_factor: float = Field(10.0, ge=1)
    pct_start: float = Field(0.25, gt=0, lt=1)
    anneal: Literal["cos", "linear"] = "linear"
    div_factor: float = Field(25.0, ge=1)
    final_div_factor: float = Field(1e4, ge=1)
    cycle_momentum: bool = False
    label_smoothing: float = Field(0.2, ge=0, le=1)
    grad_clip: Optional[float] = Field(None, gt=0)
    ema_decay: Optional[float] = Field(None, gt=0, lt=1)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: Optional[int] = Field(None, ge=1)
    channels_last: Literal["auto", "on", "off"] = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"
    compile: bool = False
    deterministic: bool = True


class EvaluateParams(_Section):
    batch_size: int = Field(1000, ge=1)
    tta_flip: bool = True
    tta_shift: int = Field(1, ge=0, le=4)
    top_confused: int = Field(5, ge=1)


class VisualizeParams(_Section):
    images_per_class: int = Field(1, ge=1, le=10)
    feature_channels: int = Field(8, ge=1, le=64)
    deep_filter_layer: int = Field(1, ge=0)  # index among conv layers, 0 = first
    deep_filter_count: int = Field(6, ge=1, le=32)
    deep_filter_inputs: int = Field(6, ge=1, le=32)
    gradcam_images: int = Field(6, ge=1, le=32)
    prediction_grid: int = Field(24, ge=1, le=100)
    mistakes: int = Field(16, ge=1, le=100)
    augment_examples: int = Field(8, ge=1, le=32)
    dpi: int = Field(110, ge=50, le=400)
    seed: int = Field(0, ge=0)


class TheoryParams(_Section):
    seed: int = Field(0, ge=0)
    image_index: int = Field(0, ge=0)  # test image used for the real-filter figure
    dpi: int = Field(110, ge=50, le=400)


class Params(_Section):
    download: DownloadParams = DownloadParams()
    data: DataParams = DataParams()
    augment: AugmentParams = AugmentParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    visualize: VisualizeParams = VisualizeParams()
    theory: TheoryParams = TheoryParams()


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names that are allowed at `loc` (for a "did you mean")."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _one_line(err: ValidationError, raw: dict) -> str:
    e = err.errors()[0]
    # drop pydantic's union-member tags ("list[str]", "literal['all']") from the location
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    key = ".".join(str(p) for p in loc)
    if e["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[-1]), _known_keys(Params, loc), n=1)
        more = f" (did you mean {'.'.join([*map(str, loc[:-1]), hint[0]])!r}?)" if hint else ""
        return f"params.yaml: unknown key {key!r}{more}"
    value: Any = raw
    for p in loc:
        try:
            value = value[p]
        except (KeyError, IndexError, TypeError):
            break
    msg = e["msg"].removeprefix("Value error, ")
    if key == "data.classes" and e["type"] in ("literal_error", "list_type"):
        msg = "must be 'all' or a list of CIFAR-10 class names"
    if isinstance(value, dict):  # a check across keys of one section names its keys itself
        return f"params.yaml: {key}.{msg}"
    return f"params.yaml: {key}={value!r}: {msg}"


def deep_merge(base: dict, over: dict) -> dict:
    """`base` with the keys of `over` replaced, recursing into nested mappings (like `-S` overrides)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(base.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def parse_params(raw: dict) -> Params:
    """Validate a params mapping; raises ParamsError with a one-line message."""
    try:
        p = Params.model_validate(raw or {})
    except ValidationError as err:
        raise ParamsError(_one_line(err, raw or {})) from None
    return p


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw)


def check_runtime(p: Params, n_train: Optional[int] = None) -> None:
    """Checks that need the data or the machine: batch size vs split size, device availability."""
    import torch

    if n_train is not None and p.train.batch_size > n_train:
        raise ParamsError(f"params.yaml: train.batch_size={p.train.batch_size}: larger than the training "
                          f"split ({n_train} images); use at most {n_train}")
    if p.train.device == "cuda" and not torch.cuda.is_available():
        raise ParamsError("params.yaml: train.device='cuda': no CUDA GPU is visible on this machine; "
                          "use 'auto' or 'cpu'")
    if p.train.device == "mps" and not torch.backends.mps.is_available():
        raise ParamsError("params.yaml: train.device='mps': MPS is not available here; use 'auto' or 'cpu'")
