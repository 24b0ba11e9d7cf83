"""`sandrun pause` and `sandrun resume`: a running job's life past start and cancel."""

from __future__ import annotations

from sandrun.cli import render
from sandrun.cli.options import JobId, JsonOpt


def pause(job_id: JobId, json: JsonOpt = False) -> None:
    """Freeze a running job in place; it keeps its slot and its timeout stops counting."""
    from sandrun.client import connect

    with connect() as client:
        record = client.get(job_id).pause().record
    if json:
        render.print_json(record)
    else:
        render.err.print(f"job {job_id} paused: {record.message}")


def resume(job_id: JobId, json: JsonOpt = False) -> None:
    """Let a paused job run on from where it stopped."""
    from sandrun.client import connect

    with connect() as client:
        record = client.get(job_id).resume().record
    if json:
        render.print_json(record)
    else:
        render.err.print(f"job {job_id} resumed")
