"""Turning user input (dicts, YAML files) into a JobSpec, or one clear InvalidSpec."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sandrun.errors import InvalidSpec
from sandrun.hints import did_you_mean
from sandrun.spec.gpus import GpuRequest
from sandrun.spec.job import JobSpec, Repository
from sandrun.spec.policies import Limits, RetryPolicy, WarmPolicy

# Which model's fields are valid at each nested place, for "did you mean" suggestions.
_MODELS_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): JobSpec,
    ("retries",): RetryPolicy,
    ("gpus",): GpuRequest,
    ("limits",): Limits,
    ("repository",): Repository,
    ("warm",): WarmPolicy,
}


def parse_spec(data: object) -> JobSpec:
    """Validate `data` (a mapping, e.g. from YAML or JSON) into a JobSpec."""
    if isinstance(data, JobSpec):
        return data
    if not isinstance(data, Mapping):
        raise InvalidSpec(
            f"a job spec must be a mapping of fields, not {type(data).__name__}",
            suggestions=["e.g. {command: [python3, train.py], cpus: 2}"],
        )
    try:
        return JobSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise _to_invalid_spec(exc) from None


def _to_invalid_spec(exc: ValidationError) -> InvalidSpec:
    return invalid_spec_from(list(exc.errors()))


def invalid_spec_from(
    errors: list[Any],
    strip: tuple[str, ...] = (),
    model_at: Callable[[tuple[str, ...]], type[BaseModel] | None] = _MODELS_AT.get,
    source: str = "",
) -> InvalidSpec:
    """One clear error from pydantic's list, naming every field at fault (the first is the
    error's `field`), each with what would be valid.

    `strip` drops leading location parts that are not fields (FastAPI's "body", "query");
    `model_at` says which model's fields are valid under a location (a JobSpec's by
    default); `source` (a file name) starts the message.
    """
    found: dict[str | None, InvalidSpec] = {}
    for error in errors:
        one = _one_problem(error, strip, model_at)
        found.setdefault(one.field, one)  # a field's first error (a union gives several)
    first, *others = found.values()
    if not others:
        return InvalidSpec(
            f"{source}{first.message}", field=first.field, suggestions=first.suggestions
        )
    listed = "; ".join(e.message for e in found.values())
    return InvalidSpec(
        f"{source}{len(found)} problems: {listed}",
        field=first.field,
        suggestions=list(
            dict.fromkeys(
                f"{e.field}: {hint}" if hint.startswith("did you mean") else hint
                for e in found.values()
                for hint in e.suggestions
            )
        ),
    )


def _one_problem(
    error: Any,
    strip: tuple[str, ...],
    model_at: Callable[[tuple[str, ...]], type[BaseModel] | None],
) -> InvalidSpec:
    # A key the caller sent may hold a NUL: shown escaped, as no text we answer holds one.
    loc = tuple(str(part).replace("\0", "\\0") for part in error["loc"])
    if loc and loc[0] in strip:
        loc = loc[1:]
    field = ".".join(loc) or None
    if error["type"] == "extra_forbidden":
        parent, unknown = loc[:-1], loc[-1]
        model = model_at(parent)
        valid = list(model.model_fields) if model else []
        hint = did_you_mean(unknown, valid)
        return InvalidSpec(
            f"unknown field {field!r}",
            field=field,
            suggestions=[*hint, "valid fields: " + ", ".join(valid)] if valid else hint,
        )
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "this field is required"
    where = f"{field}: " if field else ""
    return InvalidSpec(f"{where}{message}", field=field)


def load_spec_file(path: str | Path) -> JobSpec:
    """Read a YAML (or JSON, which is YAML) job spec file."""
    import yaml  # here: most commands read no file, and yaml costs every start 8 ms

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidSpec(f"cannot read spec file {str(path)!r}: {exc.strerror}") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InvalidSpec(f"{path} is not valid YAML{where}: {problem}") from None
    if data is None:
        raise InvalidSpec(f"{path} is empty; it should hold a job spec")
    return parse_spec(data)
