"""A pipeline definition as a user writes it (YAML or Python), checked whole at submit.

Each step is a job's fields (templates allowed) plus the step's own keys: `needs`,
`when`, `for_each`, `max_parallel`, `on_item_failure`, `cache`. A step that a template
reads (`steps.prep.outputs[...]`) is needed without being named in `needs`. Unknown
steps, unknown keys and cycles are refused naming the step; each step's job fields are
validated as a job would be, with the values only a run can give stood in for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from graphlib import CycleError, TopologicalSorter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sandrun.errors import InvalidSpec, SandrunError
from sandrun.hints import did_you_mean
from sandrun.pipeline.render import stand_in
from sandrun.pipeline.template import TemplateProblem, condition_refs, expression_of, step_refs
from sandrun.spec import JobSpec, parse_spec
from sandrun.spec.fields import NAME_RE
from sandrun.spec.units import parse_duration

STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # an identifier: `steps.NAME` reads it
STEP_KEYS = ("needs", "when", "for_each", "max_parallel", "on_item_failure", "cache")
TOP_KEYS = ("name", "steps", "params", "defaults", "description")
MAX_STEPS = 200
MAX_ITEMS = 10_000  # items one fan-out may make
DEFAULT_CACHE = 7 * 86400.0  # seconds a `cache: true` result is reused
_MERGED = ("env", "labels", "requires", "limits")  # defaults merged into a step's own


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    needs: list[str] = []
    when: str | None = None
    for_each: Any = None  # a list, or one `{{ … }}` giving one
    max_parallel: int | None = Field(default=None, ge=1, le=MAX_ITEMS)
    on_item_failure: Literal["fail", "continue"] = "fail"
    cache: float | None = None  # seconds a cached result stays good; None: not cached
    job: dict[str, Any]  # the job's fields, templates unrendered

    @property
    def fans_out(self) -> bool:
        return self.for_each is not None


class Definition(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    params: dict[str, Any] = {}
    steps: dict[str, Step]  # in the order written; `needs` come before

    def dependents(self, name: str) -> list[str]:
        return [s.name for s in self.steps.values() if name in s.needs]


def parse_pipeline(data: object, sets: Mapping[str, Any] | None = None) -> Definition:
    """Check `data` (a mapping from YAML or Python) and give the definition to run, with
    `sets` (`--set k=v`) over its `params`."""
    if not isinstance(data, Mapping):
        raise InvalidSpec(f"a pipeline must be a mapping, not {type(data).__name__}")
    for key in data:
        if key not in TOP_KEYS:
            raise InvalidSpec(
                f"{key!r} is not a pipeline field; valid: {', '.join(TOP_KEYS)}",
                field=str(key),
                suggestions=did_you_mean(str(key), TOP_KEYS),
            )
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidSpec(
            "name: give the pipeline a name of 1-128 letters, digits, - or _", field="name"
        )
    params = _mapping(data.get("params", {}), "params")
    params = {**params, **(sets or {})}
    defaults = _mapping(data.get("defaults", {}), "defaults")
    steps_given = _mapping(data.get("steps"), "steps")
    if not 1 <= len(steps_given) <= MAX_STEPS:
        raise InvalidSpec(f"steps: a pipeline has 1 to {MAX_STEPS} steps", field="steps")
    steps = {n: _step(str(n), raw, defaults) for n, raw in steps_given.items()}
    _check_needs(steps)
    ordered = _ordered(steps)
    definition = Definition(name=name, params=params, steps={n: steps[n] for n in ordered})
    for step in definition.steps.values():
        standin_spec(definition, step)
    return definition


def _mapping(value: object, field: str) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise InvalidSpec(f"{field}: must be a mapping", field=field)
    return {str(k): v for k, v in value.items()}


def _step(name: str, raw: object, defaults: dict[str, Any]) -> Step:
    where = f"steps.{name}"
    if not STEP_NAME.match(name):
        raise InvalidSpec(
            f"{where}: a step's name is a letter or _ then up to 63 letters, digits or _",
            field=where,
        )
    fields = _mapping(raw, where)
    known = (*STEP_KEYS, *JobSpec.model_fields)
    for key in fields:
        if key not in known:
            raise InvalidSpec(
                f"{where}.{key}: not a step or job field",
                field=f"{where}.{key}",
                suggestions=did_you_mean(key, known),
            )
    for key in ("after", "inputs_from"):
        if key in fields:
            raise InvalidSpec(
                f"{where}.{key}: a step waits for other steps through `needs`, and reads "
                "their outputs through templates",
                field=f"{where}.{key}",
                suggestions=["inputs: {file: \"{{ steps.NAME.outputs['file'] }}\"}"],
            )
    own = {k: fields.pop(k) for k in STEP_KEYS if k in fields}
    job = {**defaults, **fields}
    for key in _MERGED:
        if isinstance(defaults.get(key), dict) and isinstance(fields.get(key), dict):
            job[key] = {**defaults[key], **fields[key]}
    needs, when, for_each = _step_keys(where, own)
    try:
        refs = step_refs(job) | step_refs(for_each) | (condition_refs(when) if when else set())
    except TemplateProblem as exc:
        raise InvalidSpec(f"{where}: {exc}", field=where) from None
    try:
        return Step(
            name=name,
            needs=list(dict.fromkeys([*needs, *sorted(refs)])),
            when=when,
            for_each=for_each,
            max_parallel=own.get("max_parallel"),
            on_item_failure=own.get("on_item_failure", "fail"),
            cache=_cache(own.get("cache", False), where),
            job=job,
        )
    except SandrunError:
        raise
    except ValueError as exc:  # pydantic's: max_parallel, on_item_failure
        problem = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
        field = ".".join(str(p) for p in problem["loc"])
        raise InvalidSpec(f"{where}.{field}: {problem['msg']}", field=f"{where}.{field}") from None


def _step_keys(where: str, own: dict[str, Any]) -> tuple[list[str], str | None, Any]:
    """A step's `needs`, `when` and `for_each`, checked."""
    needs = own.get("needs", [])
    if isinstance(needs, str):
        needs = [needs]
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise InvalidSpec(f"{where}.needs: a list of step names", field=f"{where}.needs")
    when = own.get("when")
    if when is not None and not isinstance(when, str):
        raise InvalidSpec(f"{where}.when: an expression, as text", field=f"{where}.when")
    for_each = own.get("for_each")
    if for_each is not None and not (
        isinstance(for_each, list) or (isinstance(for_each, str) and expression_of(for_each))
    ):
        raise InvalidSpec(
            f"{where}.for_each: a list, or one '{{{{ … }}}}' that gives one",
            field=f"{where}.for_each",
            suggestions=["e.g. for_each: '{{ range(8) }}' or for_each: [a, b]"],
        )
    if isinstance(for_each, list) and len(for_each) > MAX_ITEMS:
        raise InvalidSpec(f"{where}.for_each: at most {MAX_ITEMS} items", field=f"{where}.for_each")
    return needs, when, for_each


def _cache(value: object, where: str) -> float | None:
    if value is False or value is None:
        return None
    if value is True:
        return DEFAULT_CACHE
    try:
        return parse_duration(value)
    except (ValueError, TypeError):
        raise InvalidSpec(
            f"{where}.cache: true, false, or how long a result is reused (e.g. '7d')",
            field=f"{where}.cache",
        ) from None


def _check_needs(steps: dict[str, Step]) -> None:
    for step in steps.values():
        for need in step.needs:
            if need == step.name:
                raise InvalidSpec(
                    f"steps.{step.name}: a step cannot need itself", field=f"steps.{step.name}"
                )
            if need not in steps:
                raise InvalidSpec(
                    f"steps.{step.name}.needs: there is no step named {need!r}",
                    field=f"steps.{step.name}.needs",
                    suggestions=did_you_mean(need, list(steps)),
                )


def _ordered(steps: dict[str, Step]) -> list[str]:
    try:
        order = list(TopologicalSorter({n: s.needs for n, s in steps.items()}).static_order())
    except CycleError as exc:
        cycle = list(exc.args[1])
        raise InvalidSpec(
            f"steps.{cycle[0]}: the steps form a cycle: {' -> '.join(cycle)}",
            field=f"steps.{cycle[0]}",
        ) from None
    depth: dict[str, int] = {}
    for name in order:  # each after its needs
        depth[name] = 1 + max((depth[n] for n in steps[name].needs), default=0)
    written = list(steps)
    # Keep the written order where the needs allow it (a stable topological order).
    return sorted(order, key=lambda n: (depth[n], written.index(n)))


def standin_spec(definition: Definition, step: Step) -> JobSpec:
    """The step's job, validated with stand-ins for what only a run gives."""
    where = f"steps.{step.name}"
    try:
        fields = stand_in(step.job, step.for_each, definition.params)
    except TemplateProblem as exc:
        raise InvalidSpec(f"{where}: {exc}", field=where) from None
    try:
        return parse_spec(fields)
    except InvalidSpec as exc:
        field = f"{where}.{exc.field}" if exc.field else where
        raise InvalidSpec(
            f"{where}: {exc.message}", field=field, suggestions=exc.suggestions
        ) from None
