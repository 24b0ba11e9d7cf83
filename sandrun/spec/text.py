"""No NUL characters in text that reaches the store.

PostgreSQL cannot hold U+0000 in `text` or `jsonb`: a spec that carried one would be
accepted by SQLite and break every later query over it on PostgreSQL (a claim's
`requires::jsonb`, a label filter). So every text field of a spec or a request refuses it,
with the field named, and the published schema says so (a pattern on each string).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationInfo

NO_NUL = r"^[^\x00]*$"  # for strings with no pattern of their own
NUL = "\x00"


def nul_in(value: object) -> str | None:
    """Where in `value` (a string, or containers and models of them) a NUL is: "" for the
    value itself, else the key or index path below it; None if there is none."""
    if isinstance(value, str):
        return "" if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and NUL in key:
                return f".{key!r}"
            inner = nul_in(item)
            if inner is not None:
                return f".{key}{inner}"
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            inner = nul_in(item)
            if inner is not None:
                return f".{index}{inner}"
    elif isinstance(value, BaseModel):
        return nul_in(dict(value))
    return None


def refuse_nul(value: Any, info: ValidationInfo) -> Any:
    """A field validator (after) for every field of a model whose text reaches the store."""
    where = nul_in(value)
    if where is not None:
        raise ValueError(
            f"{info.field_name}{where} holds a NUL character (\\u0000), which no text may hold"
        )
    return value


def forbid_nul_in_schema(schema: dict[str, Any]) -> None:
    """A model's `json_schema_extra`: give every plain string in it the NO_NUL pattern.
    Strings with a pattern, format or enum of their own already exclude NUL."""
    _patch(schema)


def _patch(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _patch(item)
        return
    if not isinstance(node, dict):
        return
    kinds = node.get("type")
    is_text = kinds == "string" or (isinstance(kinds, list) and "string" in kinds)
    if is_text and not {"pattern", "format", "enum", "const"} & node.keys():
        node["pattern"] = NO_NUL
    is_map = kinds == "object" and isinstance(node.get("additionalProperties"), dict)
    if is_map and "propertyNames" not in node:
        node["propertyNames"] = {"pattern": NO_NUL}  # a map's keys are text too
    for key, value in node.items():
        if key not in ("$defs", "definitions"):  # each model patches its own
            _patch(value)
