"""The `sandrun` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sandrun.cli import render
from sandrun.cli.specargs import build_spec
from sandrun.client import Client, Job, connect
from sandrun.errors import IllegalTransition, InvalidInput, JobNotFound, SandrunError
from sandrun.models import Role

app = typer.Typer(
    name="sandrun",
    help="Run jobs — commands, scripts, YAML specs — with live logs, retries and outputs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
JobId = Annotated[str, typer.Argument(help="The job's id.", show_default=False)]


def _client() -> Client:
    return connect()


# Options shared by `run` and `submit`.
CommandArg = Annotated[
    list[str] | None, typer.Argument(help="The command and its arguments, after --.")
]
FileOpt = Annotated[
    Path | None, typer.Option("--file", "-f", help="A YAML job spec.", dir_okay=False)
]
ShellOpt = Annotated[str | None, typer.Option(help="A shell command line, run by /bin/sh -c.")]
NameOpt = Annotated[str | None, typer.Option(help="A name: letters, digits, - and _.")]
EnvOpt = Annotated[
    list[str] | None,
    typer.Option("--env", "-e", help="KEY=VALUE, or KEY to copy it from here. Repeatable."),
]
CpusOpt = Annotated[float | None, typer.Option(help="CPUs to reserve (default 1).")]
MemoryOpt = Annotated[str | None, typer.Option(help="Memory to reserve, e.g. 512MB, 8GB.")]
TimeoutOpt = Annotated[str | None, typer.Option(help="Wall-clock limit, e.g. 90, 30m, 2h.")]
RetriesOpt = Annotated[int | None, typer.Option(help="Retries after a failed attempt.")]
OutputOpt = Annotated[
    list[str] | None, typer.Option("--output", "-o", help="Glob of files to keep. Repeatable.")
]
LabelOpt = Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE.")]
PriorityOpt = Annotated[str | None, typer.Option(help="low, normal, high or an integer.")]
WorkdirOpt = Annotated[
    Path | None, typer.Option(help="Directory to run in (default: the current one).")
]


def _submit(client: Client, command: list[str] | None, **kw: Any) -> Job:
    spec = build_spec(
        command,
        local=client.transport.embedded,
        file=kw.pop("file"),
        shell=kw.pop("shell"),
        env=kw.pop("env") or [],
        labels=kw.pop("label") or [],
        outputs=kw.pop("output") or [],
        options={
            "name": kw["name"],
            "cpus": kw["cpus"],
            "memory": kw["memory"],
            "timeout": kw["timeout"],
            "retries": kw["retries"],
            "priority": _priority(kw["priority"]),
            "working_dir": str(kw["workdir"].resolve()) if kw["workdir"] else None,
        },
    )
    return client.submit(spec)


def _priority(text: str | None) -> str | int | None:
    """--priority takes a class name or a number; the spec wants numbers as numbers."""
    return int(text) if text is not None and text.lstrip("-").isdigit() else text


@app.command(context_settings={"allow_interspersed_args": False})
def run(
    command: CommandArg = None,
    file: FileOpt = None,
    shell: ShellOpt = None,
    name: NameOpt = None,
    env: EnvOpt = None,
    cpus: CpusOpt = None,
    memory: MemoryOpt = None,
    timeout: TimeoutOpt = None,
    retries: RetriesOpt = None,
    output: OutputOpt = None,
    label: LabelOpt = None,
    priority: PriorityOpt = None,
    workdir: WorkdirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Run a job and stream its logs; exit with its exit code (124 timeout, 130 cancelled)."""
    with _client() as client:
        job = _submit(
            client,
            command,
            file=file,
            shell=shell,
            name=name,
            env=env,
            cpus=cpus,
            memory=memory,
            timeout=timeout,
            retries=retries,
            output=output,
            label=label,
            priority=priority,
            workdir=workdir,
        )
        if json:
            record = job.wait().record
            render.print_json(record)
            raise typer.Exit(render.exit_code_for(record))
        render.err.print(f"[dim]job {job.id} submitted[/dim]")
        _follow(client, job)


def _follow(client: Client, job: Job) -> None:
    """Stream logs until the job ends; Ctrl-C cancels it. Exits with the job's status."""
    try:
        _stream(client, job.id)
    except KeyboardInterrupt:
        render.err.print(f"\n[dim]cancelling job {job.id}…[/dim]")
        try:
            job.cancel()
        except IllegalTransition:
            pass  # it ended meanwhile
    record = job.wait().record
    style = "green" if record.exit_code == 0 and not record.failure_reason else "red"
    render.err.print(f"[{style}]{render.summary(record)}[/]")
    raise typer.Exit(render.exit_code_for(record))


def _stream(client: Client, job_id: str) -> None:
    attempt = 0
    for chunk in client.logs(job_id, follow=True):
        if attempt and chunk.attempt != attempt:
            render.err.print(f"[dim]── attempt {chunk.attempt} ──[/dim]")
        attempt = chunk.attempt
        stream = sys.stdout if chunk.stream == "stdout" else sys.stderr
        stream.buffer.write(chunk.data)
        stream.flush()


@app.command(context_settings={"allow_interspersed_args": False})
def submit(
    command: CommandArg = None,
    file: FileOpt = None,
    shell: ShellOpt = None,
    name: NameOpt = None,
    env: EnvOpt = None,
    cpus: CpusOpt = None,
    memory: MemoryOpt = None,
    timeout: TimeoutOpt = None,
    retries: RetriesOpt = None,
    output: OutputOpt = None,
    label: LabelOpt = None,
    priority: PriorityOpt = None,
    workdir: WorkdirOpt = None,
    json: JsonOpt = False,
) -> None:
    """Submit a job and print its id; it runs in the background."""
    with _client() as client:
        job = _submit(
            client,
            command,
            file=file,
            shell=shell,
            name=name,
            env=env,
            cpus=cpus,
            memory=memory,
            timeout=timeout,
            retries=retries,
            output=output,
            label=label,
            priority=priority,
            workdir=workdir,
        )
        if json:
            render.print_json(job.record)
        else:
            print(job.id)


@app.command()
def status(job_id: JobId, json: JsonOpt = False) -> None:
    """Show a job's state, exit code, failure reason and attempts."""
    with _client() as client:
        job = client.get(job_id)
        attempts = job.attempts
        if json:
            render.print_json(
                {
                    **job.record.model_dump(mode="json"),
                    "attempt_list": [a.model_dump(mode="json") for a in attempts],
                }
            )
        else:
            render.status_panel(job.record, attempts)


@app.command()
def jobs(
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    name: Annotated[str | None, typer.Option(help="Only jobs with this name.")] = None,
    label: Annotated[str | None, typer.Option(help="Only jobs with label KEY=VALUE.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    with _client() as client:
        page = client.jobs(state=state, name=name, label=label, limit=limit)
        if json:
            render.print_json(page.jobs)
        elif page.jobs:
            render.jobs_table(page.jobs)
        else:
            render.err.print("no jobs")


@app.command()
def logs(
    job_id: JobId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep following.")] = False,
    attempt: Annotated[int | None, typer.Option(help="Only this attempt.")] = None,
    json: JsonOpt = False,
) -> None:
    """Print a job's output (stdout to stdout, stderr to stderr)."""
    with _client() as client:
        client.get(job_id)  # an unknown id is an error even with no output
        if json:
            chunks = list(client.logs(job_id, follow=follow, attempt=attempt))
            render.print_json(
                [
                    {
                        "attempt": c.attempt,
                        "seq": c.seq,
                        "stream": c.stream,
                        "text": c.data.decode(errors="replace"),
                        "at": c.at,
                    }
                    for c in chunks
                ]
            )
            return
        for chunk in client.logs(job_id, follow=follow, attempt=attempt):
            stream = sys.stdout if chunk.stream == "stdout" else sys.stderr
            stream.buffer.write(chunk.data)
            stream.flush()


@app.command()
def wait(
    job_id: JobId,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    json: JsonOpt = False,
) -> None:
    """Wait for a job to end; exit with its exit code (124 timeout, 130 cancelled)."""
    with _client() as client:
        record = client.get(job_id).wait(timeout).record
        if json:
            render.print_json(record)
        else:
            render.err.print(render.summary(record))
        raise typer.Exit(render.exit_code_for(record))


@app.command()
def cancel(job_id: JobId, json: JsonOpt = False) -> None:
    """Cancel a job: a pending one at once, a running one's whole process tree."""
    with _client() as client:
        record = client.cancel(job_id).record
        if json:
            render.print_json(record)
        elif record.is_terminal:
            render.err.print(f"job {job_id} cancelled")
        else:
            render.err.print(f"job {job_id}: cancel requested; its processes are being stopped")


@app.command()
def outputs(
    job_id: JobId,
    download: Annotated[
        Path | None, typer.Option(help="Write the outputs under this directory.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """List a job's collected outputs, or download them."""
    with _client() as client:
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
            for f in files:
                print(f"{f.size:>12}  {f.digest[:12]}  {f.path}")


@app.command()
def nodes(
    all_nodes: Annotated[
        bool, typer.Option("--all", "-a", help="Include agents that have stopped.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """List agents: state, capacity, running attempts, last heartbeat."""
    with _client() as client:
        found = [n for n in client.nodes() if all_nodes or n.state != "stopped"]
        if json:
            render.print_json(found)
        elif found:
            render.nodes_table(found)
        else:
            render.err.print("no nodes have registered")


@app.command()
def server(
    db: Annotated[
        str | None, typer.Option(help="SQLite file (default: $SANDRUN_HOME/server.db).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No tokens (loopback addresses only).")
    ] = False,
    lease: Annotated[
        float, typer.Option(help="Seconds an agent may go silent before its jobs move.")
    ] = 30.0,
) -> None:
    """Serve the HTTP API (under /v1) for remote agents, the CLI and the SDK."""
    from sandrun.server import run_server

    run_server(_server_db(db), host=host, port=port, auth=not no_auth, lease_seconds=lease)


def _server_db(db: str | None) -> str:
    from sandrun.home import Home

    return db or str(Home.resolve().root / "server.db")


token_app = typer.Typer(help="API tokens for a server.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="Who it is for; a user's jobs are owned by it.")],
    role: Annotated[Role, typer.Option(help="user, agent or admin.")] = Role.USER,
    db: Annotated[
        str | None, typer.Option(help="The server's SQLite file (default: $SANDRUN_HOME).")
    ] = None,
) -> None:
    """Create a token and print it; it is shown only this once (the server keeps a hash)."""
    from sandrun.server import open_server_service

    service = open_server_service(_server_db(db))
    try:
        print(service.create_token(name, role))
    finally:
        service.close()


@app.command()
def agent(
    server: Annotated[
        str | None, typer.Option(help="A server URL; without it, run the local agent.")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="SANDRUN_TOKEN", help="An agent token.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Node name (default: hostname).")] = None,
    label: LabelOpt = None,
    max_jobs: Annotated[int | None, typer.Option(help="Attempts at once, at most.")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPUs to offer (default: all).")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory to offer (default: all).")] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Where attempts run (default: under $SANDRUN_HOME).")
    ] = None,
    drain_grace: Annotated[
        float, typer.Option(help="On SIGTERM, seconds running jobs get before hand-back.")
    ] = 60.0,
    idle_exit: Annotated[
        float, typer.Option(help="Local agent: exit after this many idle seconds (0: never).")
    ] = 0,
    kill_grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL.")] = 5.0,
) -> None:
    """Run an agent in the foreground: the local one, or one serving a remote server."""
    import logging
    import socket

    from sandrun.home import Home

    home = Home.resolve()
    if server is None:
        from sandrun.embedded import serve

        raise typer.Exit(serve(home, idle_exit or None, kill_grace))

    from sandrun.agent import detect_capacity
    from sandrun.agent.remote import run_remote_agent
    from sandrun.cli.specargs import parse_pairs
    from sandrun.models import Capacity
    from sandrun.spec import parse_memory_mb

    here = detect_capacity()
    offered = Capacity(
        cpus=cpus if cpus is not None else here.cpus,
        memory_mb=parse_memory_mb(memory) if memory else here.memory_mb,
    )
    node = name or socket.gethostname()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    raise typer.Exit(
        run_remote_agent(
            server,
            token,
            name=node,
            labels=parse_pairs(label or [], "labels", "--label"),
            work_dir=work_dir or home.root / f"agent-{node}",
            capacity=offered,
            max_jobs=max_jobs,
            kill_grace=kill_grace,
            drain_grace=drain_grace,
        )
    )


def main() -> None:
    """Entry point: one clear line for any sandrun error, and its exit status."""
    try:
        app()
    except (InvalidInput, JobNotFound, IllegalTransition) as exc:
        render.error(exc)
        sys.exit(2)
    except SandrunError as exc:
        render.error(exc)
        sys.exit(1)
