"""`sandrun pause`, `resume`, `checkpoint`, `checkpoints`, `exec` and `shell`: a running
job's life past start and cancel (docs/lifecycle.md)."""

from __future__ import annotations

from typing import Annotated

import typer

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


def checkpoint(job_id: JobId, json: JsonOpt = False) -> None:
    """Ask a running job to checkpoint now: it gets its checkpoint signal (SIGUSR1 unless
    its spec says otherwise), saves into $SANDRUN_CHECKPOINT_DIR and exits 85; its next
    attempt starts from what it saved."""
    from sandrun.client import connect

    with connect() as client:
        record = client.get(job_id).checkpoint().record
    if json:
        render.print_json(record)
    else:
        signal = record.spec.checkpoint.signal
        render.err.print(f"job {job_id}: asked to checkpoint ({signal} within a heartbeat)")


def checkpoints(job_id: JobId, json: JsonOpt = False) -> None:
    """The checkpoints a job keeps, oldest first; its next attempt starts from the last."""
    from sandrun.client import connect

    with connect() as client:
        kept = client.get(job_id).checkpoints()
    if json:
        render.print_json([c.model_dump(mode="json") for c in kept])
        return
    if not kept:
        render.err.print(f"job {job_id} has no checkpoint")
        return
    from rich.table import Table

    table = Table("ATTEMPT", "SIZE", "DIGEST", "SAVED", box=None)
    for c in kept:
        attempt = str(c.attempt) if c.attempt else "0 (restored from)"
        table.add_row(attempt, f"{c.size} bytes", c.digest, render.ago(c.created_at))
    render.out.print(table)


def exec_(
    job_id: JobId,
    command: Annotated[list[str], typer.Argument(help="what to run, after --")],
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="pass this terminal's input on")
    ] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t", help="give it a pseudo-terminal")] = False,
    json: JsonOpt = False,
) -> None:
    """Run a command inside a running job (its sandbox, cgroup, uid, environment and
    working directory) and exit with its exit code: `sandrun exec JOB -- ls -la`.
    With --json, its output is collected and printed as {exit_code, stdout, stderr}."""
    from sandrun.client import connect
    from sandrun.client import terminal as term

    with connect() as client:
        job = client.get(job_id)
        if json:
            done = job.exec(command)
            render.print_json(
                {
                    "exit_code": done.exit_code,
                    "stdout": done.stdout.decode(errors="replace"),
                    "stderr": done.stderr.decode(errors="replace"),
                }
            )
            raise typer.Exit(done.exit_code)
        rows, cols = term.size()
        stream = job.open_exec(command, tty, rows, cols)
        code = term.interact(stream, terminal=tty, stdin=interactive or tty)
    raise typer.Exit(code)


def shell(job_id: JobId) -> None:
    """An interactive terminal inside a running job (bash where it has one, else sh);
    exits with the shell's status."""
    from sandrun.client import connect

    with connect() as client:
        code = client.get(job_id).shell()
    raise typer.Exit(code)
