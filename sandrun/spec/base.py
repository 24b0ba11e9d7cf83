"""The base of every user-facing spec model: unknown fields refused (a typo must not pass
silently), frozen, and no NUL in any text (see text.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from sandrun.spec.text import forbid_nul_in_schema, refuse_nul


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=forbid_nul_in_schema)
    _no_nul = field_validator("*")(refuse_nul)


# Validation context for a spec read back from the store: it passed the rules in force when
# it was submitted, and a rule added since (a size cap, say) must not make it unreadable.
STORED: dict[str, Any] = {"stored": True}


def is_stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))
