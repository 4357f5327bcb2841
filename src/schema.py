"""The base of every params.yaml section. Its own module so that a model file can declare its
section without importing src.params (which imports the model registry)."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

NUMBERS = {int, float}


def _types_in(annotation: Any) -> set[Any]:
    """The types an annotation admits at its top (`int | None` → {int, NoneType}, `list[float]` →
    {list}); a Literal's values count as their types, so Literal[True, "x"] admits bool and str;
    Annotated[int, …] (PositiveInt) counts as int."""
    origin = get_origin(annotation)
    if origin is Literal:
        return {type(a) for a in get_args(annotation)}
    if origin is Annotated:
        return _types_in(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return set().union(*(_types_in(a) for a in get_args(annotation)))
    return {origin or annotation}


def _number_items(annotation: Any) -> bool:
    """Whether the annotation is (or admits) a list or tuple of numbers, at any depth: list[int],
    list[list[float]] (data.normalize), list[PositiveInt] | None."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType, Annotated):
        return any(_number_items(a) for a in get_args(annotation)[: 1 if origin is Annotated else None])
    if origin in (list, tuple):
        return any(_types_in(a) & NUMBERS or _number_items(a) for a in get_args(annotation) if a is not Ellipsis)
    return False


def _has_bool(v: Any) -> bool:
    return isinstance(v, bool) or (isinstance(v, (list, tuple)) and any(_has_bool(x) for x in v))


class Section(BaseModel):
    """A params.yaml section: every key typed and required (params.yaml is the one source of
    values), unknown keys are errors, and values are frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .inf passed gt=0

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, v: Any, info: ValidationInfo) -> Any:
        """YAML reads true/false (and yes/no, on/off) as booleans, and pydantic would take True as
        the number 1: `epochs: true` trained one epoch, `widths: [64, true, 256]` built a 1-channel
        conv. A number key, or a list of numbers, refuses a boolean."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None or not _has_bool(v):
            return v
        types = _types_in(field.annotation)
        if isinstance(v, bool) and types & NUMBERS and bool not in types:
            raise ValueError("must be a number, not a boolean (YAML reads true/false, yes/no, on/off as booleans)")
        if not isinstance(v, bool) and _number_items(field.annotation):
            raise ValueError("must be numbers, not booleans (YAML reads true/false, yes/no, on/off as booleans)")
        return v
