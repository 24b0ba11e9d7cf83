"""`sandrun outputs` and `sandrun verify`: what a job made, and whether its agent signed it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sandrun.cli import render
from sandrun.cli.options import JobId, JsonOpt


def outputs(
    job_id: JobId,
    download: Annotated[
        Path | None, typer.Option(help="Write the outputs under this directory.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """List a job's collected outputs, or download them."""
    from sandrun.client import connect

    with connect() as client:
        job = client.get(job_id)
        files = job.outputs
        if download is not None:
            written = job.download(download)
            if not json:
                for path in written:
                    print(path)
        if json:
            render.print_json(files)
        elif download is None:
            if not files:
                render.err.print(f"job {job_id} has no outputs")
                return
            print(f"{'SIZE':>12}  {'SHA256':<12}  PATH")
            for f in files:
                print(f"{f.size:>12}  {f.digest[:12]}  {f.path}")


def verify(
    job_id: JobId,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Check the outputs downloaded here (default: the server's)."),
    ] = None,
    worker: Annotated[
        str | None, typer.Option(help="Also require this worker id (an agent's public key).")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="Also require this server's countersignature (its /health worker_id)."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Check a job's result (exit code and outputs) against its agent's signature and its
    server's countersignature."""
    from sandrun.client import connect

    with connect() as client:
        from sandrun.client.verify import verify_result

        verdict = verify_result(client, job_id, directory, worker, server)
    if json:
        render.print_json({**vars(verdict), "ok": verdict.ok})
    elif verdict.ok:
        print(
            f"verified: job {verdict.job_id} attempt {verdict.attempt} (exit code "
            f"{verdict.exit_code}, {verdict.outputs} outputs) signed by {verdict.worker_id}"
            + (f", countersigned by server {verdict.server_id}" if verdict.server_id else "")
        )
    else:
        for problem in verdict.problems:
            render.err.print(f"[red]not verified:[/red] {problem}")
    raise typer.Exit(0 if verdict.ok else 1)
