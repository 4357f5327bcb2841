"""The schema of params.yaml: every key typed, ranged and required, checked before a stage runs.

params.yaml is the one source of values: the schema says what is allowed, never what the default
is. A wrong or missing value raises :class:`ParamsError` with one line naming the key, the value
and what is allowed; stages print that line and exit non-zero before touching any output.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from src.errors import ParamsError
from src.schema import Section

__all__ = [
    "ParamsError",
    "Params",
    "load_params",
    "parse_params",
    "parse_section",
    "check_runtime",
    "checked_recipe",
    "check_index",
    "batch_remainder_warning",
    "deep_merge",
]

SEED_MAX = 2**32 - 1  # what every generator takes (torch's manual_seed overflows past 2**64 - 1)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # what the notebook hard-codes
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
TRAIN_PER_CLASS_MAX = 5000
TEST_PER_CLASS_MAX = 1000


def did_you_mean(value: str, allowed, prefix: str = "") -> str:
    """' (did you mean <prefix + the closest of allowed>?)', or '' when nothing is close."""
    hint = difflib.get_close_matches(str(value), list(allowed), n=1)
    return f" (did you mean {prefix + hint[0]!r}?)" if hint else ""


class DownloadParams(Section):
    url: str
    md5: str = Field(pattern=r"^[0-9a-f]{32}$")
    retries: int = Field(ge=0, le=20)
    backoff_s: float = Field(ge=0)
    timeout_s: float = Field(gt=0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(v)
        except ValueError:  # an unclosed [ of an IPv6 host
            parts = None
        if parts is None or parts.scheme not in ("http", "https", "ftp", "file") or not (parts.netloc or parts.path):
            raise ValueError("must be a URL that urllib can fetch: http://, https://, ftp:// or file://")
        return v


NORMALIZE_ALLOWED = (
    "must be 'computed', 'cifar10' or [[mean r,g,b], [std r,g,b]] on the 0-1 pixel scale: "
    "each mean in [0, 1], each std in (0, 1]"
)


class DataParams(Section):
    classes: Literal["all"] | list[str]
    train_per_class: int | None = Field(ge=1)
    val_per_class: int = Field(ge=1)
    test_per_class: int | None = Field(ge=1, le=TEST_PER_CLASS_MAX)
    seed: int = Field(ge=0, le=SEED_MAX)
    normalize: Literal["computed", "cifar10"] | list[list[float]]

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, v: Any) -> Any:
        if v == "all":
            return v
        seen: set[str] = set()
        for name in v:
            if name not in CIFAR10_CLASSES:
                raise ValueError(
                    f"unknown class {name!r}{did_you_mean(name, CIFAR10_CLASSES)}; "
                    f"allowed: {', '.join(CIFAR10_CLASSES)} or 'all'"
                )
            if name in seen:
                raise ValueError(f"class {name!r} is listed twice")
            seen.add(name)
        if len(v) < 2:
            raise ValueError(f"needs at least 2 classes, got {len(v)}")
        return v

    @field_validator("normalize")
    @classmethod
    def _check_normalize(cls, v: Any) -> Any:
        # pixels are scaled to 0-1 before normalising: 0-255 values (125.3, 63.0) would shift every
        # image far off zero without an error anywhere
        if isinstance(v, list) and (
            len(v) != 2
            or any(len(row) != 3 for row in v)
            or any(not 0 <= m <= 1 for m in v[0])
            or any(not 0 < s <= 1 for s in v[1])
        ):
            raise ValueError(NORMALIZE_ALLOWED)
        return v

    @model_validator(mode="after")
    def _check_counts(self) -> DataParams:
        avail = TRAIN_PER_CLASS_MAX - self.val_per_class
        if avail < 1:
            raise ValueError(
                f"val_per_class={self.val_per_class} leaves no training images (each class has {TRAIN_PER_CLASS_MAX})"
            )
        if self.train_per_class is not None and self.train_per_class > avail:
            raise ValueError(
                f"train_per_class={self.train_per_class} is more than the data holds: "
                f"{TRAIN_PER_CLASS_MAX} per class minus val_per_class={self.val_per_class} "
                f"leaves {avail}"
            )
        return self

    @property
    def class_names(self) -> list[str]:
        return list(CIFAR10_CLASSES) if self.classes == "all" else list(self.classes)


class AugmentParams(Section):
    hflip: bool | Literal["alternate"]  # alternate: each image mirrored every other epoch
    crop_padding: int = Field(ge=0, le=16)
    crop_pad_mode: Literal["reflect", "zeros"]
    cutout: int = Field(ge=0, le=32)
    autoaugment: bool
    mixup_alpha: float = Field(ge=0)
    brightness: float = Field(ge=0, le=1)  # per-image shift, in channel standard deviations
    contrast: float = Field(ge=0, lt=1)  # per-image scale 1 ± this about the mean

    @field_validator("hflip", mode="before")
    @classmethod
    def _check_hflip(cls, v: Any) -> Any:
        if isinstance(v, bool) or v == "alternate":
            return v
        raise ValueError("must be true (random), alternate or false")


class ModelParams(Section):
    """`name` picks a model of src/models/; `model.<name>` is that model's own section, checked
    against the model's params class when the model is built (`src.models.model_section`), so this
    module needs no model code."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    def raw_section(self, name: str | None = None) -> dict | None:
        """The mapping under `model.<name>` in params.yaml (the chosen model's by default)."""
        return (self.model_extra or {}).get(name or self.name)


class TrainParams(Section):
    epochs: int = Field(ge=1)
    time_budget_s: float | None = Field(gt=0)
    batch_size: int = Field(ge=1)
    optimizer: Literal["sgd", "adamw", "muon"]
    lr: float = Field(gt=0)
    muon_lr: float = Field(gt=0)  # Muon's peak lr for conv filters (optimizer: muon)
    momentum: float = Field(ge=0, lt=1)
    muon_momentum: float | None = Field(ge=0, lt=1)  # Muon's own momentum (optimizer: muon); None = momentum
    nesterov: bool
    weight_decay: float = Field(ge=0)
    bn_bias_lr_factor: float = Field(gt=0)  # BatchNorm biases' lr over the rest's (sgd, muon's SGD part; 1 = same)
    max_lr_factor: float = Field(ge=1)
    pct_start: float = Field(gt=0, lt=1)
    anneal: Literal["cos", "linear"]
    div_factor: float = Field(ge=1)
    final_div_factor: float = Field(ge=1)
    cycle_momentum: bool
    label_smoothing: float = Field(ge=0, le=1)
    grad_clip: float | None = Field(gt=0)
    ema_decay: float | None = Field(gt=0, lt=1)
    lookahead_steps: int = Field(ge=0)  # 0 = off
    lookahead_decay: float = Field(gt=0, lt=1)
    freeze_at: list[float] = Field(max_length=16)  # stage i stops training after this fraction of the steps
    seed: int = Field(ge=0, le=SEED_MAX)
    device: Literal["auto", "cpu", "cuda", "mps"]
    threads: int | None = Field(ge=1)
    reuse_memory: bool
    nproc: int = Field(ge=1)
    channels_last: Literal["auto", "on", "off"]
    amp: Literal["auto", "bf16", "off"]
    half: Literal["off", "bf16", "fp16"]
    compile: bool
    deterministic: bool

    @field_validator("amp", "channels_last", "half", mode="before")
    @classmethod
    def _yaml_switch(cls, v: Any, info) -> Any:
        """`-S train.amp=off` reaches us as False (YAML 1.1 reads on/off as booleans): take it."""
        if isinstance(v, bool):
            return ("on" if info.field_name == "channels_last" else "bf16") if v else "off"
        return v

    @field_validator("freeze_at")
    @classmethod
    def _freeze_in_order(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v) or v != sorted(v):
            raise ValueError("fractions of the steps, each in (0, 1), not decreasing (the first stage freezes first)")
        return v

    @model_validator(mode="after")
    def _freeze_alone(self) -> TrainParams:
        if self.freeze_at and self.nproc > 1:
            raise ValueError(
                f"freeze_at={self.freeze_at} with nproc={self.nproc}: DistributedDataParallel expects a "
                "gradient for every parameter; use freeze_at: [] or nproc: 1"
            )
        return self


class EvaluateParams(Section):
    batch_size: int = Field(ge=1)
    tta_flip: bool
    tta_shift: int = Field(ge=0, le=4)
    tta_fraction: float = Field(gt=0, le=1)
    top_confused: int = Field(ge=1)


class VisualizeParams(Section):
    images_per_class: int = Field(ge=1, le=10)
    feature_channels: int = Field(ge=1, le=64)
    deep_filter_layer: int = Field(ge=0)  # index among conv layers, 0 = first
    deep_filter_count: int = Field(ge=1, le=32)
    deep_filter_inputs: int = Field(ge=1, le=32)
    gradcam_images: int = Field(ge=1, le=32)
    prediction_grid: int = Field(ge=1, le=100)
    mistakes: int = Field(ge=1, le=100)
    augment_examples: int = Field(ge=1, le=32)
    patch_channels: int = Field(ge=1, le=64)
    patch_top: int = Field(ge=1, le=32)  # the evaluate stage keeps 32 (src.teach.probe.KEPT)
    dpi: int = Field(ge=50, le=400)
    seed: int = Field(ge=0, le=SEED_MAX)


class TheoryParams(Section):
    seed: int = Field(ge=0, le=SEED_MAX)
    image_index: int = Field(ge=0)  # test image used for the real-filter figure
    dpi: int = Field(ge=50, le=400)


class ReportParams(Section):
    pdf: bool  # also print the PDF (needs Chromium)
    image_index: int = Field(ge=0)  # test image of the neuron written out in section IV
    bn_images: int = Field(ge=1, le=2000)  # test images through the trained BatchNorm (section XI)
    mixup_alpha: float = Field(gt=0)  # the MixUp example's Beta(α, α)
    seed: int = Field(ge=0, le=SEED_MAX)
    dpi: int = Field(ge=50, le=400)


class GpuParams(Section):
    """The GPU recipe: values that replace augment/model/train ones when training runs on CUDA."""

    use: Literal["auto", "always", "never"]  # auto: on CUDA only; always: on any device (to try it on a CPU)
    augment: dict
    model: dict
    train: dict

    @field_validator("use", mode="before")
    @classmethod
    def _yaml_never(cls, v: Any) -> Any:
        return "never" if v is False else v


class Params(Section):
    download: DownloadParams
    data: DataParams
    augment: AugmentParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    visualize: VisualizeParams
    theory: TheoryParams
    report: ReportParams
    gpu: GpuParams

    def recipe_for(self, device_type: str) -> tuple[Params, str]:
        """The params training uses on a `device_type` ("cpu", "cuda", "mps") and the recipe's name:
        these params, or with the `gpu` section's values in place (gpu.use: auto on CUDA, always)."""
        if self.gpu.use == "never" or (self.gpu.use == "auto" and device_type != "cuda"):
            return self, "default"
        return self.with_gpu_recipe(), "gpu"

    def with_gpu_recipe(self) -> Params:
        """These params with the `gpu` section's augment/model/train values in place."""
        return parse_params(gpu_recipe_raw(self.model_dump()))


GPU_SECTIONS = ("augment", "model", "train")  # the sections the gpu section's values replace keys of


def gpu_recipe_raw(raw: dict) -> dict:
    """The params mapping `raw` (valid or not) with its gpu section's augment/model/train values in
    place: what the GPU recipe trains with (`Params.with_gpu_recipe`, and `src.run_diff` on a raw file)."""
    gpu = raw.get("gpu") if isinstance(raw.get("gpu"), dict) else {}
    return deep_merge(raw, {s: gpu.get(s) or {} for s in GPU_SECTIONS if isinstance(raw.get(s), dict)})


def _section_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section class that holds the last key of `loc` (for a "did you mean")."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


# after a missing key's name: where params.yaml is the file at fault, the committed one is complete
MISSING_HINT = " (every key must be set; the committed params.yaml has them all)"
ADD_KEY_HINT = "; add it to params.yaml, or -S +"  # a model section's missing key (src/models: a new model's)


def _one_line(
    err: ValidationError, raw: dict, schema: type[BaseModel] | None = None, prefix: tuple = (), index: int | None = None
) -> str:
    """Error `index` as `params.yaml: key=value: what is allowed`; `prefix` is where `raw` sits. By
    default the first unknown key (a misspelt key also leaves the right one missing: the typo is
    what to name), else the first error."""
    errors = err.errors()
    if index is None:
        index = next((i for i, e in enumerate(errors) if e["type"] == "extra_forbidden"), 0)
    e = errors[index]
    # drop pydantic's union-member tags ("list[str]", "literal['all']") from the location
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    value: Any = raw
    for p in loc:
        try:
            value = value[p]
        except (KeyError, IndexError, TypeError):
            break
    inner, loc = loc, (*prefix, *loc)
    key = ".".join(str(p) for p in loc)
    if e["type"] == "extra_forbidden":
        holder = _section_at(schema or Params, inner)
        parents = "".join(f"{p}." for p in loc[:-1])
        known = list(holder.model_fields) if holder else []
        # nothing close: name what the section holds (a typo's likely key is already suggested)
        more = did_you_mean(loc[-1], known, prefix=parents) or (f"; allowed: {', '.join(known)}" if known else "")
        return f"params.yaml: unknown key {key!r}{more}"
    if e["type"] == "missing":
        return f"params.yaml: {key}: missing{MISSING_HINT}"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "literal_error" and isinstance(value, str):  # `-S train.optimizer=Adam`: 'adamw'
        msg += did_you_mean(value.lower(), re.findall(r"'([^']*)'", str((e.get("ctx") or {}).get("expected"))))
    if key == "data.classes" and e["type"] in ("literal_error", "list_type"):
        msg = "must be 'all' or a list of CIFAR-10 class names" + did_you_mean(str(value).lower(), ["all"])
    if key.startswith("data.normalize") and e["type"] != "value_error":  # pydantic names only one union member
        data = raw.get("data") if isinstance(raw, dict) and not prefix else None
        whole = data.get("normalize", value) if isinstance(data, dict) else value
        key, value, msg = "data.normalize", whole, NORMALIZE_ALLOWED
    if isinstance(value, dict):  # a check across keys of one section names its keys itself
        return f"params.yaml: {key}.{msg}"
    return f"params.yaml: {key}={value!r}: {msg}"


def not_from_params_yaml(line: str) -> str:
    """A params error line without what names params.yaml (its prefix, the missing key's hint):
    for params that come from elsewhere (a checkpoint's)."""
    return line.removeprefix("params.yaml: ").removesuffix(MISSING_HINT).split(ADD_KEY_HINT)[0]


def every_error(err: ValidationError, raw: Any, schema: type[BaseModel], prefix: tuple = ()) -> str:
    """All of `err`'s errors worded as params.yaml's are (`key: missing`, `key=value: what is
    allowed`), joined by "; ", without naming params.yaml (`not_from_params_yaml`)."""
    return "; ".join(not_from_params_yaml(_one_line(err, raw, schema, prefix, i)) for i in range(err.error_count()))


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {"a.b.c": value}; lists are values (as `dvc params diff` shows them)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _as_number(v: Any) -> Any:
    """`v`, a string that reads as a number made one: PyYAML (YAML 1.1) reads 5e-4 as a string,
    DVC writes dvc.lock as YAML 1.2 (0.0005), and pydantic takes either as the float."""
    if isinstance(v, list):
        return [_as_number(x) for x in v]
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def not_as_run(params: Any, lock: Any, stages: tuple[str, ...] | None = None) -> list[str]:
    """The keys whose value in `params` (params.yaml) differs from the value `lock` (dvc.lock)
    records its stages (those named, else all) ran with: results beside them are another run's."""
    if not isinstance(params, dict) or not isinstance(lock, dict):
        return []
    ran: dict[str, Any] = {}
    for name, stage in (lock.get("stages") or {}).items():
        if stages is None or name in stages:
            ran.update(flatten(((stage or {}).get("params") or {}).get("params.yaml") or {}))
    now = flatten(params)
    return sorted(k for k, v in ran.items() if k not in now or _as_number(now[k]) != _as_number(v))


def changed_params(before: dict, after: dict) -> list[dict]:
    """Every dotted key whose value differs, was added or removed, sorted: [{key, before, after,
    before_set, after_set}]; a key absent on one side is None there with `*_set` False (a key set
    to null, empty in params.yaml, is None with `*_set` True)."""
    a, b = flatten(before), flatten(after)
    return [
        {"key": k, "before": a.get(k), "after": b.get(k), "before_set": k in a, "after_set": k in b}
        for k in sorted(set(a) | set(b))
        if (k in a, a.get(k)) != (k in b, b.get(k))
    ]


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
    for name in ("augment", "train"):  # the GPU recipe's values must be valid where they land
        parse_section(
            type(getattr(p, name)), deep_merge(getattr(p, name).model_dump(), getattr(p.gpu, name)), f"gpu.{name}"
        )
    return p


def parse_section(schema: type[Section], raw: dict, key: str) -> Section:
    """Validate one section that sits at `key` (e.g. "model.fast_cnn"); errors name the full key."""
    try:
        return schema.model_validate(raw or {})
    except ValidationError as err:
        raise ParamsError(_one_line(err, raw or {}, schema, tuple(key.split(".")))) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key twice in one mapping is an error: PyYAML keeps the
    last silently, so a second `train:` section appended to the file would hide the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: PyYAML's merge, its keys may repeat
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:  # a list as a key: PyYAML's own error says so
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"{key!r} a second time at one level (the first at line {seen[key] + 1}); each key once",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def yaml_error(exc: yaml.YAMLError) -> str:
    """PyYAML's error as one line: where (line, column) and what it found, where its text says
    (a reader's error, an unprintable character, has its own words and no line)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0].strip()
    tab = "; indent with spaces, not tabs" if "'\\t'" in what else ""
    return f"{where}{what}{tab}"


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {yaml_error(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:  # a folder of that name, no permission
        raise ParamsError(f"{path}: cannot be read ({exc.strerror}); it must be the params file") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw)


DROP_WARN_SHARE = 0.25  # a quarter of the images unseen each epoch is worth a line; less is drop_last's usual cost
FEW_STEPS = 20  # optimizer steps in a whole run below which it can learn little: the train note, the review's caveat


def _try_batch(n_train: int, nproc: int = 1) -> int:
    """A batch size to suggest for `n_train` images: the largest power of two that still gives 8
    steps an epoch (so it drops under an eighth of them), a multiple of `nproc`."""
    b = 1 << max(0, (n_train // 8).bit_length() - 1)
    return max(nproc, b // nproc * nproc)


def batch_remainder_warning(batch_size: int, n_train: int, nproc: int = 1) -> str | None:
    """One line when the last partial batch, which training skips every epoch (src/training/loop.py
    drops it so every step has the same size), is a large share of the training images; else None."""
    dropped = n_train % batch_size
    if batch_size > n_train or dropped < DROP_WARN_SHARE * n_train:
        return None
    steps = n_train // batch_size
    # as many steps as it takes to cover the split, each as large as fits: drops at most a few images
    better = max(nproc, n_train // (steps + 1) // nproc * nproc)
    hint = f"; train.batch_size={better} would skip {n_train % better}" if n_train % better < dropped else ""
    return (
        f"params.yaml: warning: train.batch_size={batch_size} trains on {steps * batch_size} of the "
        f"{n_train} training images an epoch ({steps} step{'s' if steps > 1 else ''}) and skips {dropped} "
        f"({round(100 * dropped / n_train)} %: the last partial batch is dropped){hint}"
    )


def planned_train_images(p: Params) -> int:
    """How many training images the stats stage will select for `p.data`, before any data exists
    (CIFAR-10 has 5,000 a class, `val_per_class` of them held out), so a batch larger than the split
    stops before the data is read, or before a benchmark trains another recipe first."""
    per_class = p.data.train_per_class or TRAIN_PER_CLASS_MAX - p.data.val_per_class
    return per_class * len(p.data.class_names)


def checked_recipe(p: Params, device_type: str, n_train: int | None) -> tuple[Params, str]:
    """The params of the recipe that trains on a `device_type` and its name (`Params.recipe_for`),
    checked against the runtime and the data (`check_runtime`); an error in a value the GPU recipe
    set says where to change it."""
    run, recipe = p.recipe_for(device_type)
    try:
        check_runtime(run, n_train)
    except ParamsError as e:
        if recipe != "gpu" or (e.key is not None and e.key not in _recipe_keys(p)):  # train.device: cuda is train's own
            raise
        raise ParamsError(f"{e} (a value of the GPU recipe: set it under gpu.train, or -S gpu.use=never)") from None
    return run, recipe


def _recipe_keys(p: Params) -> set[str]:
    """The keys the GPU recipe sets, as `train.batch_size`."""
    return {f"{name}.{k}" for name in ("augment", "model", "train") for k in flatten(getattr(p.gpu, name))}


def check_index(key: str, value: int, n: int, things: str, whose: str = "") -> int:
    """`value` when it picks one of `n` `things` (0-based, a plural noun), else a ParamsError naming
    `key`, how many there are (of `whose`, e.g. "model my_cnn") and the range allowed."""
    if not 0 <= value < n:
        counted = f"{n:,} {things.removesuffix('s') if n == 1 else things}{' of ' + whose if whose else ''}"
        allowed = f"0 to {n - 1:,}" if n > 1 else ("0" if n == 1 else "none")
        there = "there is" if n == 1 else "there are"
        raise ParamsError(f"params.yaml: {key}={value}: out of range: {there} {counted}; allowed: {allowed}")
    return value


def check_runtime(p: Params, n_train: int | None = None) -> None:
    """Checks that need the data or the machine: batch size vs split size, device availability.
    A batch larger than the split is refused; one that leaves a large remainder unseen is a warning."""
    import torch

    if n_train is not None and p.train.batch_size > n_train:
        raise ParamsError(
            f"params.yaml: train.batch_size={p.train.batch_size}: larger than the training "
            f"split ({n_train} images); allowed: ≤ {n_train} (try {_try_batch(n_train, p.train.nproc)})",
            key="train.batch_size",
        )
    if p.train.batch_size % p.train.nproc:
        raise ParamsError(
            f"params.yaml: train.batch_size={p.train.batch_size}: must divide evenly among "
            f"train.nproc={p.train.nproc} processes",
            key="train.batch_size",
        )
    if (
        p.train.nproc > 1
        and torch.cuda.is_available()
        and p.train.device in ("auto", "cuda")
        and p.train.nproc > torch.cuda.device_count()
    ):
        raise ParamsError(
            f"params.yaml: train.nproc={p.train.nproc}: more processes than the "
            f"{torch.cuda.device_count()} GPU(s) here; use at most {torch.cuda.device_count()}",
            key="train.nproc",
        )
    if p.train.device == "cuda" and not torch.cuda.is_available():
        raise ParamsError(
            "params.yaml: train.device='cuda': no CUDA GPU is visible on this machine; use 'auto' or 'cpu'",
            key="train.device",
        )
    if p.train.device == "mps" and not torch.backends.mps.is_available():
        raise ParamsError(
            "params.yaml: train.device='mps': MPS is not available here; use 'auto' or 'cpu'", key="train.device"
        )
    # last: a warning is worth printing only when no error stops the run
    warning = None if n_train is None else batch_remainder_warning(p.train.batch_size, n_train, p.train.nproc)
    if warning and os.environ.get("RANK", "0") == "0":  # under torchrun every process checks: rank 0 speaks
        print(warning, file=sys.stderr, flush=True)
