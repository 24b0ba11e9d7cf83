"""The spec's field types and their checks: names, keys, digests, git words, durations
and sizes in every form users write them, each published in the JSON schema too."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationInfo, WithJsonSchema

from sandrun.spec.base import is_stored
from sandrun.spec.units import (
    DURATION_PATTERN,
    MAX_MEMORY_MB,
    MEMORY_PATTERN,
    parse_duration,
    parse_memory_mb,
)

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
INPUT_REF = r"^[A-Za-z0-9_-]{1,64}:[^\x00/][^\x00]*$"  # a job id, then one of its outputs
AFTER_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}(:(ok|failed|any))?$")  # a job id, its condition
MAX_AFTER = 1000  # jobs one job may wait for (a call may wait for a whole `.map()`)
# Spelled out: Python's \s and JSON Schema's (ECMA) \s disagree on some control characters.
NOT_BLANK = r"[^ \t\n\r\f\v]"
# Text that shell-style splitting (shlex) takes: every quote closed, no lone backslash at
# the end, and at least one word. Published as the schema's pattern, so what a client may
# send is what the server splits.
_WORD = r'''[^ \t\n\r\f\v'"\\]|\\[\s\S]|'[^']*'|"(?:[^"\\]|\\[\s\S])*"'''
SHELL_WORDS = rf"^[ \t\n\r\f\v]*(?:{_WORD})(?:[ \t\n\r\f\v]|{_WORD})*$"
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$")
PRIORITY_CLASSES = {"low": -10, "normal": 0, "high": 10}
# A git URL or ref never starts with '-' (it would read as an option) nor holds blanks.
# Explicit ASCII blanks, not \s: Python's \s also takes \x1c-\x1f, a JSON Schema
# (ECMAScript) one does not, and the schema must say exactly what is refused.
GIT_WORD = r"^[^- \t\n\r\f\v\x00][^ \t\n\r\f\v\x00]*$"
DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
# An input's path: relative, no '..' component, naming a file (no trailing '/').
INPUT_PATH = r"^(?!/|([^\x00]*/)?\.\.(/|$))[^\x00]*[^/\x00]$"


def _digest(value: object) -> object:
    if isinstance(value, str) and not DIGEST_RE.match(value):
        raise ValueError(f"{value[:80]!r} is not a sha256 digest (64 lowercase hex digits)")
    return value


Digest = Annotated[  # the sha256 (hex) of a blob's content
    str, BeforeValidator(_digest), WithJsonSchema({"type": "string", "pattern": DIGEST_RE.pattern})
]


def git_word(what: str) -> Any:
    def check(value: object) -> object:
        if isinstance(value, str) and not re.fullmatch(GIT_WORD, value):
            raise ValueError(f"{what} {value!r} must not be empty, start with '-' or hold blanks")
        return value

    return BeforeValidator(check)


# Each accepted form is published in the JSON schema, so API clients see them all.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
]


def _memory_mb(value: object, info: ValidationInfo) -> int:
    return parse_memory_mb(value, capped=not is_stored(info))


MemoryMB = Annotated[
    int,
    BeforeValidator(_memory_mb),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_MEMORY_MB},
                {"type": "string", "pattern": MEMORY_PATTERN},
            ]
        }
    ),
]


def priority_value(value: object) -> object:
    if isinstance(value, str):
        if value not in PRIORITY_CLASSES:
            raise ValueError(
                f"priority {value!r} is not valid; use low, normal, high or an integer"
            )
        return PRIORITY_CLASSES[value]
    return value


def env_values(value: object) -> object:
    # YAML reads `PORT: 8080` as a number; an environment only holds strings.
    if isinstance(value, dict):
        return {k: _env_text(v) for k, v in value.items()}
    return value


def _env_text(value: object) -> object:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, int | float) else value


def unique(value: object) -> object:
    if isinstance(value, list) and len({repr(v) for v in value}) != len(value):
        raise ValueError("list each value once")
    return value


def also_accepts(*alternatives: dict[str, Any]) -> Any:
    """Publish more accepted forms beside a field's generated schema (a $ref, say)."""

    def extend(schema: dict[str, Any]) -> None:
        generated = {k: schema.pop(k) for k in list(schema) if k in ("$ref", "anyOf", "type")}
        schema["anyOf"] = [*generated.pop("anyOf", [generated] if generated else []), *alternatives]

    return extend


def _after_entry(value: str) -> str:
    if not AFTER_RE.match(value):
        raise ValueError(
            f"after entry {value!r} is not a job id, optionally with ':ok', ':failed' or "
            "':any'; e.g. 'j-123:ok'"
        )
    return value


def _result_path(value: str) -> str:
    if not re.match(INPUT_PATH, value):
        raise ValueError(
            f"result {value!r} must be a file path relative to the working directory, "
            "e.g. 'result.json'"
        )
    return value


AfterEntry = Annotated[
    str,
    AfterValidator(_after_entry),
    WithJsonSchema({"type": "string", "pattern": AFTER_RE.pattern}),
]
ResultPath = Annotated[
    str, AfterValidator(_result_path), WithJsonSchema({"type": "string", "pattern": INPUT_PATH})
]
InputRef = Annotated[
    str,
    AfterValidator(lambda v: _matches(v, INPUT_REF, "JOB_ID:OUTPUT_PATH, e.g. 'j-1:model.pt'")),
    WithJsonSchema({"type": "string", "pattern": INPUT_REF}),
]


def _matches(value: str, pattern: str, shape: str) -> str:
    if not re.match(pattern, value):
        raise ValueError(f"{value!r} is not {shape}")
    return value
