"""The base of every params.yaml section. Its own module so that a model file can declare its
section without importing src.params (which imports the model registry)."""

from __future__ import annotations

from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _types_in(annotation: Any) -> set[Any]:
    """The types an annotation admits at its top (`int | None` → {int, NoneType}, `list[float]` →
    {list}); a Literal's values count as their types, so Literal[True, "x"] admits bool and str."""
    origin = get_origin(annotation)
    if origin is Literal:
        return {type(a) for a in get_args(annotation)}
    if origin in (Union, UnionType):
        return set().union(*(_types_in(a) for a in get_args(annotation)))
    return {origin or annotation}


class Section(BaseModel):
    """A params.yaml section: every key typed and required (params.yaml is the one source of
    values), unknown keys are errors, and values are frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .inf passed gt=0

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, v: Any, info: ValidationInfo) -> Any:
        """YAML reads true/false (and yes/no, on/off) as booleans, and pydantic would take True as
        the number 1: `epochs: true` trained one epoch. A number key refuses a boolean."""
        if isinstance(v, bool) and info.field_name in cls.model_fields:
            types = _types_in(cls.model_fields[info.field_name].annotation)
            if types & {int, float} and bool not in types:
                raise ValueError("must be a number, not a boolean (YAML reads true/false, yes/no, on/off as booleans)")
        return v
