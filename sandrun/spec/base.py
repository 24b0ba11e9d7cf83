"""The base of every user-facing spec model: unknown fields refused (a typo must not pass
silently), frozen, and no NUL in any text (see text.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from sandrun.spec.text import forbid_nul_in_schema, refuse_nul


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=forbid_nul_in_schema)
    _no_nul = field_validator("*")(refuse_nul)
