"""Function calls as jobs: what the client sends (see `sandrun.runner`) and reads back.

Arguments and functions travel as content-addressed blobs serialized with cloudpickle; the
job runs them on the agent's own Python. Results come back as the job's outputs, read
by `Job.result` (client/job.py) on the client: never unpickled on the server.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import cloudpickle

from sandrun.runner import (
    AFTER_DIR,
    ARGS_INPUT,
    CALL_DIR,
    CALL_ENV,
    FUNCTION_INPUT,
    SHELL,
    VALUE_OUTPUT,
    Awaited,
)

if TYPE_CHECKING:
    from sandrun.client.transport import Transport

RESULT_OUTPUTS = [f"{CALL_DIR}/result.json", f"{CALL_DIR}/result.pkl"]
RESULT_PICKLE = f"{CALL_DIR}/result.pkl"


class Awaitable:
    """A call's future (or a map's, or a pipeline step's): given as an argument to another
    call, that call waits for it and receives what it returned. `awaits` is a job id, or
    `steps.NAME`; a list of them stands for a list of values."""

    awaits: str | list[str]


def awaiting(value: Any, sources: list[str]) -> Any:
    """`value` (a call's args or kwargs) with each Awaitable in it (in lists, tuples and
    dict values) replaced by the runner's `Awaited`; their sources appended to `sources`."""
    if isinstance(value, Awaitable):
        if isinstance(value.awaits, str):
            return _awaited(value.awaits, sources)
        return [_awaited(a, sources) for a in value.awaits]
    if type(value) in (list, tuple):
        return type(value)(awaiting(v, sources) for v in value)
    if type(value) is dict:
        return {k: awaiting(v, sources) for k, v in value.items()}
    return value


def _awaited(source: str, sources: list[str]) -> Awaited:
    if source not in sources:
        sources.append(source)
    return Awaited(sources.index(source))


def awaited_fields(sources: list[str]) -> dict[str, Any]:
    """The spec fields that make a call wait for `sources` and receive their values: for a
    job, `after` and `inputs_from`; for a pipeline step, an input by template."""
    after, refs, inputs = [], {}, {}
    for index, source in enumerate(sources):
        path = f"{AFTER_DIR}/{index}.pkl"
        if source.startswith("steps."):
            inputs[path] = "{{ " + f"{source}.outputs[{RESULT_PICKLE!r}]" + " }}"
        else:
            after.append(f"{source}:ok")
            refs[path] = f"{source}:{RESULT_PICKLE}"
    fields: dict[str, Any] = {"inputs": inputs}
    if after:
        fields.update(after=after, inputs_from=refs)
    return fields


LOG_TAIL_LINES = 20


def python_version() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def call_fields(
    transport: Transport,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    function_digest: str | None = None,
    file: tuple[str, str] | None = None,
    method: str | None = None,
    value: bool = False,
) -> dict[str, Any]:
    """The spec fields of one call: a pickled function (by digest) or a function in a
    source file (its name in the working directory, and the function's name); or, with
    `method`, a pickled class and its constructor's arguments, whose instance's method is
    called. Futures among the arguments are waited for (`awaiting`); with `value`, the
    returned value is also the job's JSON `result`. Merge them over the caller's with
    `merge_call`."""
    call: dict[str, Any] = {"python": python_version()}
    if method is not None:
        call["method"] = method
    if value:
        call["value"] = True
    sources: list[str] = []
    args, kwargs = awaiting(args, sources), awaiting(kwargs, sources)
    waits = awaited_fields(sources)
    inputs = {ARGS_INPUT: transport.put_blob(cloudpickle.dumps((args, kwargs))), **waits["inputs"]}
    if function_digest is not None:
        inputs[FUNCTION_INPUT] = function_digest
    if file is not None:
        call["file"], call["function"] = file
    fields = {
        "shell": SHELL,
        "env": {CALL_ENV: json.dumps(call)},
        "inputs": inputs,
        "outputs": RESULT_OUTPUTS,
        **{k: v for k, v in waits.items() if k != "inputs"},
    }
    if value:
        fields["result"] = VALUE_OUTPUT
    return fields


def merge_call(fields: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
    """The caller's spec fields with a call's over them (env, inputs, outputs merged)."""
    merged = {**fields, **call}
    for key in ("env", "inputs", "inputs_from"):
        if key in fields or key in call:
            merged[key] = {**fields.get(key, {}), **call.get(key, {})}
    for key in ("outputs", "after"):
        if key in fields or key in call:
            merged[key] = [*fields.get(key, []), *call.get(key, [])]
    return merged
