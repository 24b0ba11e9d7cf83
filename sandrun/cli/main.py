"""The `sandrun` command."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandrun.cli import agentcmd, data, doctor, lifecycle, ops, pipelines, pool, render, results
from sandrun.cli.options import (
    AfterOpt,
    CommandArg,
    ConsensusOpt,
    CpusOpt,
    EnvOpt,
    FileOpt,
    GpusOpt,
    JobId,
    JsonOpt,
    LabelOpt,
    MaxPriceOpt,
    MemoryOpt,
    MinGpuMemoryOpt,
    NameOpt,
    NetworkOpt,
    OutputOpt,
    PreemptibleOpt,
    PriorityOpt,
    RefOpt,
    RepoOpt,
    RequireOpt,
    RestoreFromOpt,
    RetriesOpt,
    SecretOpt,
    ShellOpt,
    TimeoutOpt,
    UploadOpt,
    VolumeOpt,
    WorkdirOpt,
)
from sandrun.errors import (
    IllegalTransition,
    InsufficientFunds,
    JobNotFoundError,
    PipelineNotFound,
    QuotaExceededError,
    ResourceNotAvailableError,
    SandrunError,
    ValidationError,
)
from sandrun.states import JobState

if TYPE_CHECKING:  # loaded where a command needs them: `sandrun --help` stays quick
    from sandrun.client import Client, Job

app = typer.Typer(
    name="sandrun",
    help="Run jobs — commands, scripts, YAML specs — with live logs, retries and outputs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(given: bool) -> None:
    if given:
        from importlib.metadata import version

        print(f"sandrun {version('sandrun')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            metavar="",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Run jobs — commands, scripts, YAML specs — with live logs, retries and outputs."""


def _client() -> Client:
    from sandrun.client import connect

    return connect()


def _submit(client: Client, command: list[str] | None, **kw: Any) -> Job:
    from sandrun.cli.specargs import (
        build_spec,
        gpus_option,
        priority_option,
        repository_option,
        volume_options,
    )

    upload = kw.pop("upload")
    spec = build_spec(
        command,
        local=client.transport.embedded,
        upload=upload,
        file=kw.pop("file"),
        shell=kw.pop("shell"),
        env=kw.pop("env") or [],
        labels=kw.pop("label") or [],
        requires=kw.pop("require") or [],
        outputs=kw.pop("output") or [],
        options={
            "name": kw["name"],
            "cpus": kw["cpus"],
            "memory": kw["memory"],
            "timeout": kw["timeout"],
            "retries": kw["retries"],
            "priority": priority_option(kw["priority"]),
            "working_dir": str(kw["workdir"].resolve()) if kw["workdir"] else None,
            "network": kw["network"] or None,
            "repository": repository_option(kw["repo"], kw["ref"]),
            "gpus": gpus_option(kw["gpus"], kw["min_gpu_memory"]),
            "after": kw["after"] or None,
            "consensus": kw["consensus"],
            "max_price": kw["max_price"],
            "volumes": volume_options(kw["volume"] or []) or None,
            "secrets": kw["secret"] or None,
            "preemptible": kw["preemptible"] or None,
            "restore_from": kw["restore_from"],
        },
    )
    brings = spec.working_dir or spec.code or spec.repository
    if upload is None:  # a server's agents have no copy of this directory: send it
        upload = not client.transport.embedded and not brings
    return client.submit(spec, upload_code=upload)


def _job_command(then: Callable[[Client, Job, bool], None]) -> Callable[..., None]:
    """A command taking the job options (`run` and `submit` share them), which submits the
    job and hands it to `then` (with --json)."""

    def command(
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
        require: RequireOpt = None,
        gpus: GpusOpt = None,
        min_gpu_memory: MinGpuMemoryOpt = None,
        priority: PriorityOpt = None,
        workdir: WorkdirOpt = None,
        network: NetworkOpt = None,
        repo: RepoOpt = None,
        ref: RefOpt = None,
        upload: UploadOpt = None,
        after: AfterOpt = None,
        consensus: ConsensusOpt = None,
        max_price: MaxPriceOpt = None,
        volume: VolumeOpt = None,
        secret: SecretOpt = None,
        preemptible: PreemptibleOpt = None,
        restore_from: RestoreFromOpt = None,
        json: JsonOpt = False,
    ) -> None:
        # Every option above goes to _submit by its name (`then` is this closure's own).
        options = {k: v for k, v in locals().items() if k not in ("command", "json", "then")}
        with _client() as client:
            job = _submit(client, command, **options)
            then(client, job, json)

    command.__doc__ = then.__doc__
    return command


def _run(client: Client, job: Job, json: bool) -> None:
    """Run a job and stream its logs; exit with its exit code (124 timeout, 130 cancelled)."""
    if json:
        record = job.wait().record
        render.print_json(record)
        raise typer.Exit(render.exit_code_for(record))
    render.err.print(f"[dim]job {job.id} submitted[/dim]")
    from sandrun.cli.follow import follow

    follow(client, job)


def _submitted(client: Client, job: Job, json: bool) -> None:
    """Submit a job and print its id; it runs in the background."""
    if json:
        render.print_json(job.record)
    else:
        print(job.id)


# The job options come before the command: `sandrun run -- python x.py --cpus 2` gives
# --cpus to python.
_JOB_CONTEXT = {"allow_interspersed_args": False}
app.command("run", context_settings=_JOB_CONTEXT)(_job_command(_run))
app.command("submit", context_settings=_JOB_CONTEXT)(_job_command(_submitted))


@app.command()
def status(job_id: JobId, json: JsonOpt = False) -> None:
    """Show a job's state, exit code, failure reason and attempts."""
    with _client() as client:
        job = client.get(job_id)
        attempts = job.attempts
        pending = job.record.state in (JobState.PENDING, JobState.WAITING)
        waiting = client.why_pending(job_id) if pending else None
        if json:
            render.print_json(
                {
                    **job.record.model_dump(mode="json"),
                    "attempt_list": [a.model_dump(mode="json") for a in attempts],
                    "pending_reason": waiting,
                    "events": [e.model_dump(mode="json") for e in job.events],
                }
            )
        else:
            render.status_panel(job.record, attempts, waiting)


@app.command()
def instances(
    min_gpu_memory: Annotated[
        float, typer.Option(help="Only GPUs with at least this many GB each.")
    ] = 0,
    max_price: Annotated[
        float | None, typer.Option(help="Only instances up to this price per hour.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """GPU instance types the pool can run now, with a price per hour, cheapest first."""
    with _client() as client:
        found = client.find_instances(min_gpu_memory, max_price)
    if json:
        render.print_json(found)
        return
    if not found:
        render.err.print("no node offers such GPUs now")
        return
    print(f"{'INSTANCE':<24} {'PRICE':>10}  NODES")
    for i in found:
        print(f"{i.name:<24} {i.price_per_hour:>8.2f}/h  {i.nodes}")


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
    follow: Annotated[
        bool, typer.Option("--follow", "-f", metavar="", help="Keep following.")
    ] = False,
    attempt: Annotated[int | None, typer.Option(help="Only this attempt.")] = None,
    json: JsonOpt = False,
) -> None:
    """Print a job's output (stdout to stdout, stderr to stderr)."""
    with _client() as client:
        job = client.get(job_id)  # an unknown id is an error even with no output
        if attempt is not None and not 1 <= attempt <= max(job.record.attempts, 1):
            has = f"{job.record.attempts} attempt" + ("" if job.record.attempts == 1 else "s")
            raise ValidationError(
                f"--attempt {attempt}: job {job_id} has {has} so far",
                field="attempt",
                suggestions=[f"sandrun status {job_id} lists them"],
            )
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


app.command()(lifecycle.pause)
app.command()(lifecycle.resume)
app.command()(lifecycle.checkpoint)
app.command()(lifecycle.checkpoints)
app.command("exec")(lifecycle.exec_)
app.command()(lifecycle.shell)
app.command()(results.outputs)
app.command()(results.verify)
app.command()(ops.nodes)
app.command()(ops.server)
app.command()(agentcmd.agent)
app.command()(ops.gc)
app.command()(doctor.doctor)
app.add_typer(ops.token_app, name="token")
app.add_typer(ops.db_app, name="db")
app.add_typer(pipelines.pipeline_app, name="pipeline")
app.add_typer(data.volume_app, name="volume")
app.add_typer(data.secret_app, name="secret")
app.add_typer(data.env_app, name="env")
app.command()(pool.balance)
app.command()(pool.credit)
app.command()(pool.cost)
app.command()(pool.key)
app.add_typer(pool.ledger_app, name="ledger")
app.add_typer(pool.pool_app, name="pool")
app.add_typer(pool.node_app, name="node")


REFUSED = (
    ValidationError,
    InsufficientFunds,
    JobNotFoundError,
    PipelineNotFound,
    IllegalTransition,
    ResourceNotAvailableError,
    QuotaExceededError,
)


def main() -> None:
    """Entry point: one clear line for any sandrun error, and its exit status."""
    try:
        app()
    except REFUSED as exc:  # the request was refused and changed nothing
        render.error(exc)
        sys.exit(2)
    except SandrunError as exc:
        render.error(exc)
        sys.exit(1)
