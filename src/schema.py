"""The base of every params.yaml section. Its own module so that a model file can declare its
section without importing src.params (which imports the model registry)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A params.yaml section: every key typed and required (params.yaml is the one source of
    values), unknown keys are errors, and values are frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .inf passed gt=0
