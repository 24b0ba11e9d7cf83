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

from sandrun.runner import ARGS_INPUT, CALL_DIR, CALL_ENV, FUNCTION_INPUT, SHELL

if TYPE_CHECKING:
    from sandrun.client.transport import Transport

RESULT_OUTPUTS = [f"{CALL_DIR}/result.json", f"{CALL_DIR}/result.pkl"]
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
) -> dict[str, Any]:
    """The spec fields of one call: a pickled function (by digest) or a function in a
    source file (its name in the working directory, and the function's name); or, with
    `method`, a pickled class and its constructor's arguments, whose instance's method is
    called. Merge them over the caller's with `merge_call`."""
    call: dict[str, Any] = {"python": python_version()}
    if method is not None:
        call["method"] = method
    inputs = {ARGS_INPUT: transport.put_blob(cloudpickle.dumps((args, kwargs)))}
    if function_digest is not None:
        inputs[FUNCTION_INPUT] = function_digest
    if file is not None:
        call["file"], call["function"] = file
    return {
        "shell": SHELL,
        "env": {CALL_ENV: json.dumps(call)},
        "inputs": inputs,
        "outputs": RESULT_OUTPUTS,
    }


def merge_call(fields: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
    """The caller's spec fields with a call's over them (env, inputs, outputs merged)."""
    merged = {**fields, **call}
    for key in ("env", "inputs"):
        merged[key] = {**fields.get(key, {}), **call[key]}
    merged["outputs"] = [*fields.get("outputs", []), *call["outputs"]]
    return merged
