"""JobSpec: what a user asks to run, and with what.

User-facing: unknown fields are refused (a typo must not pass silently), and every error
names the field and what would be valid. See `parse_spec`.
"""

from __future__ import annotations

import re
import shlex
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from sandrun.spec.units import parse_duration, parse_memory_mb

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$")
PRIORITY_CLASSES = {"low": -10, "normal": 0, "high": 10}

Duration = Annotated[float, BeforeValidator(parse_duration)]
MemoryMB = Annotated[int, BeforeValidator(parse_memory_mb)]


def _priority(value: object) -> object:
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        if value.lower() not in PRIORITY_CLASSES:
            raise ValueError(
                f"priority {value!r} is not valid; use low, normal, high or an integer"
            )
        return PRIORITY_CLASSES[value.lower()]
    return value


def _env_values(value: object) -> object:
    # YAML reads `PORT: 8080` as a number; an environment only holds strings.
    if isinstance(value, dict):
        return {
            k: str(v).lower()
            if isinstance(v, bool)
            else str(v)
            if isinstance(v, int | float)
            else v
            for k, v in value.items()
        }
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryOn(StrEnum):
    EXIT_CODE = "exit_code"
    TIMEOUT = "timeout"
    OOM = "oom"
    NODE_LOST = "node_lost"


class RetryPolicy(_Strict):
    """`limit` retries after the first attempt, waiting backoff * factor**(n-1), capped."""

    limit: int = Field(default=0, ge=0, le=100)
    backoff: Duration = 1.0
    factor: float = Field(default=2.0, ge=1.0, le=10.0)
    max_backoff: Duration = 60.0
    on: frozenset[RetryOn] = frozenset({RetryOn.EXIT_CODE, RetryOn.TIMEOUT, RetryOn.NODE_LOST})
    no_retry_exit_codes: frozenset[int] = frozenset()

    @property
    def max_attempts(self) -> int:
        return self.limit + 1

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1-based)."""
        return float(min(self.backoff * self.factor ** (retry_number - 1), self.max_backoff))


def _retries(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"limit": value}
    return value


# "4xa100", "4*a100" and the typographic multiplication sign people paste from docs.
_GPU_RE = re.compile(r"^(?:(\d+)\s*[x\u00d7*]\s*)?([A-Za-z][A-Za-z0-9_.-]*)?$")


class GpuRequest(_Strict):
    """GPUs a job needs. Matching against nodes' GPUs comes with the resources work."""

    count: int = Field(default=1, ge=1, le=64)
    type: str | None = None
    memory_gb: float | None = Field(default=None, gt=0)


def _gpus(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value == 0 else {"count": value}
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return None if int(text) == 0 else {"count": int(text)}
        match = _GPU_RE.match(text)
        if not match or not match.group(2):
            raise ValueError(
                f"gpus {value!r} is not valid; use a count (2), a type (a100) or both (4xa100)"
            )
        return {"count": int(match.group(1) or 1), "type": match.group(2).lower()}
    return value


class JobSpec(_Strict):
    """One job: exactly one of `command`, `shell` or `script`, plus resources and policy."""

    name: str | None = None
    command: list[str] | None = None
    shell: str | None = None
    script: str | None = None
    interpreter: str | None = None
    env: Annotated[dict[str, str], BeforeValidator(_env_values)] = Field(default_factory=dict)
    working_dir: str | None = None
    cpus: float = Field(default=1.0, gt=0, le=1024)
    memory: MemoryMB | None = None
    gpus: Annotated[GpuRequest | None, BeforeValidator(_gpus)] = None
    timeout: Duration | None = None
    retries: Annotated[RetryPolicy, BeforeValidator(_retries)] = Field(default_factory=RetryPolicy)
    outputs: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    priority: Annotated[int, BeforeValidator(_priority), PlainSerializer(int)] = Field(
        default=0, ge=-1000, le=1000
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_RE.match(value):
            raise ValueError(f"name {value!r} is not valid; use 1-128 letters, digits, '-' or '_'")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError("command must be a non-empty list: the program, then its arguments")
        return value

    @field_validator("shell", "script")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_KEY_RE.match(key):
                raise ValueError(
                    f"environment variable name {key!r} is not valid; "
                    "use letters, digits and '_', not starting with a digit"
                )
        return value

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str | None) -> str | None:
        if value is not None and not PurePosixPath(value).is_absolute():
            raise ValueError(f"working_dir {value!r} must be an absolute path")
        return value

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            path = PurePosixPath(pattern)
            if not pattern or path.is_absolute() or ".." in path.parts:
                raise ValueError(
                    f"output pattern {pattern!r} must be a glob relative to the working "
                    "directory, e.g. '*.pt' or 'results/**/*.csv'"
                )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not LABEL_KEY_RE.match(key):
                raise ValueError(
                    f"label key {key!r} is not valid; use letters, digits, '_', '.', '/', '-'"
                )
        return value

    @model_validator(mode="after")
    def _one_program(self) -> JobSpec:
        given = [f for f in ("command", "shell", "script") if getattr(self, f) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            raise ValueError(f"give exactly one of command, shell or script (got {what})")
        if self.interpreter is not None and self.script is None:
            raise ValueError("interpreter is only used with script")
        return self

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.command:
            base = PurePosixPath(self.command[0]).name
        else:
            base = "shell" if self.shell is not None else "script"
        return re.sub(r"[^A-Za-z0-9_-]", "_", base)[:128] or "job"

    def argv(self, script_path: str | None = None) -> list[str]:
        """The program to exec. A script is run from `script_path`, written by the agent."""
        if self.command is not None:
            return list(self.command)
        if self.shell is not None:
            return ["/bin/sh", "-c", self.shell]
        if script_path is None:
            raise ValueError("a script job needs the path its script was written to")
        return [*shlex.split(self.interpreter or "python3"), script_path]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)
