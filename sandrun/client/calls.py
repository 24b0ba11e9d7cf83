"""Function calls as jobs: what the client sends (see `sandrun.runner`) and reads back.

Arguments and functions travel as content-addressed blobs serialized with cloudpickle; the
job runs them on the agent's own Python. Results come back as the job's outputs and are
unpickled here, on the client: never on the server.
"""

from __future__ import annotations

import json
import pickle
import sys
from typing import TYPE_CHECKING, Any

import cloudpickle

from sandrun.errors import (
    ArtifactNotFound,
    JobFailedError,
    PythonVersionMismatch,
    RemoteFunctionError,
)
from sandrun.runner import CALL_DIR, CALL_ENV
from sandrun.states import JobState

if TYPE_CHECKING:
    from sandrun.client.job import Job
    from sandrun.client.transport import Transport

RUNNER = f'exec "$SANDRUN_PYTHON" -m sandrun.runner {CALL_DIR}'
FUNCTION_INPUT = f"{CALL_DIR}/function.pkl"
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
) -> dict[str, Any]:
    """The spec fields of one call: a pickled function (by digest) or a function in a
    source file (its name in the working directory, and the function's name). Merge them
    over the caller's with `merge_call`."""
    call: dict[str, Any] = {"python": python_version()}
    inputs = {f"{CALL_DIR}/args.pkl": transport.put_blob(cloudpickle.dumps((args, kwargs)))}
    if function_digest is not None:
        inputs[FUNCTION_INPUT] = function_digest
    if file is not None:
        call["file"], call["function"] = file
    return {
        "shell": RUNNER,
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


def result_of(job: Job) -> Any:
    """The value a function job returned, or raise what it raised (or why it failed)."""
    try:
        report = json.loads(job.read_bytes(RESULT_OUTPUTS[0]))
    except ArtifactNotFound:
        raise failure(job) from None
    if report.get("ok"):
        return pickle.loads(job.read_bytes(RESULT_OUTPUTS[1]))
    remote_tb = str(report.get("traceback", ""))
    if report.get("kind") == "python_version":
        raise PythonVersionMismatch(
            str(report["message"]),
            suggestions=["run the client and the agents on the same Python minor version"],
        )
    raised: BaseException | None = None
    if report.get("kind") == "raised":
        try:
            raised = pickle.loads(job.read_bytes(RESULT_OUTPUTS[1]))
        except Exception:  # not importable here: fall back to its text
            raised = None
    if isinstance(raised, BaseException):
        raised.add_note(f"--- remote traceback (job {job.id}) ---\n{remote_tb.rstrip()}")
        raise raised
    raise RemoteFunctionError(
        f"{report.get('type')}: {report.get('message')}",
        remote_type=str(report.get("type", "")),
        remote_traceback=remote_tb,
    )


def failure(job: Job) -> JobFailedError:
    """Why a job did not complete, with the last lines of its log."""
    record = job.record
    lines = job.log_text().splitlines()[-LOG_TAIL_LINES:]
    why = record.message or (record.failure_reason.value if record.failure_reason else "")
    if record.state is JobState.COMPLETED:
        why = "it returned no result"
    return JobFailedError(
        f"job {job.id} ended {record.state.value}"
        + (f" with exit code {record.exit_code}" if record.exit_code is not None else "")
        + (f": {why}" if why else ""),
        job_id=job.id,
        state=record.state.value,
        exit_code=record.exit_code,
        log_tail="\n".join(lines),
    )
