"""`sandrun agent`: kept apart from the rest of the CLI so that an agent, which runs for
days, loads only what it needs (not the client, the server or the table renderer)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sandrun.cli.options import LabelOpt
from sandrun.errors import SandrunError, ValidationError

if TYPE_CHECKING:
    from sandrun.agent.settings import SandboxSettings
    from sandrun.models import Capacity

ServerOpt = Annotated[
    str | None,
    typer.Option(
        metavar="URL", help="Server URL(s), comma-separated; without it, run the local agent."
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        envvar="SANDRUN_TOKEN",
        metavar="TOKEN",
        help="An agent token. Prefer $SANDRUN_TOKEN or --token-file: every local user "
        "can read a command line (ps).",
    ),
]
TokenFileOpt = Annotated[
    Path | None, typer.Option(metavar="FILE", help="Read the agent token from this file.")
]
NameOpt = Annotated[str | None, typer.Option(metavar="NAME", help="Node name (default: hostname).")]
MaxJobsOpt = Annotated[int | None, typer.Option(metavar="N", help="Attempts at once, at most.")]
CpusOpt = Annotated[float | None, typer.Option(metavar="N", help="CPUs to offer (default: all).")]
MemoryOpt = Annotated[
    str | None, typer.Option(metavar="SIZE", help="Memory to offer (default: all).")
]
GpusOpt = Annotated[
    str | None,
    typer.Option(
        metavar="GPUS",
        help="GPUs to offer, e.g. 2xa100-80gb, where detection misses them "
        "(default: those NVML or nvidia-smi find; 0 for none).",
    ),
]
WorkDirOpt = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Where attempts run (default: under $SANDRUN_HOME)."),
]
DrainGraceOpt = Annotated[
    float,
    typer.Option(metavar="SECONDS", help="On SIGTERM, seconds running jobs get before hand-back."),
]
IdleExitOpt = Annotated[
    float,
    typer.Option(
        metavar="SECONDS", help="Local agent: exit after this many idle seconds (0: never)."
    ),
]
KillGraceOpt = Annotated[
    float, typer.Option(metavar="SECONDS", help="Seconds between SIGTERM and SIGKILL.")
]
LongPollOpt = Annotated[
    float,
    typer.Option(
        min=0.5,
        max=60,
        metavar="SECONDS",
        help="Seconds a claim waits at the server for work (also how soon SIGTERM is seen).",
    ),
]
SandboxOpt = Annotated[
    str,
    typer.Option(
        envvar="SANDRUN_SANDBOX",
        metavar="KIND",
        help="bwrap, unshare, none, or auto: the best that works here.",
    ),
]
SandboxRoOpt = Annotated[
    list[Path] | None,
    typer.Option(metavar="PATH", help="Also show this path to jobs, read-only. Repeatable."),
]
LocalReposOpt = Annotated[
    bool,
    typer.Option(
        "--allow-local-repos",
        metavar="",
        help="Check out repository jobs from file:// URLs and paths on this machine "
        "(by default only https, ssh and git URLs).",
    ),
]
JobMemoryOpt = Annotated[
    str | None,
    typer.Option(
        metavar="SIZE",
        help="Memory limit for a job that asks for none, e.g. 4G (default: all the "
        "memory this agent offers).",
    ),
]
JobDiskOpt = Annotated[
    str,
    typer.Option(
        metavar="SIZE",
        help="The most a job's scratch directory may hold, whatever it asks; its "
        "/tmp holds at most its memory limit.",
    ),
]
KeepFailedOpt = Annotated[
    float,
    typer.Option(
        min=0,
        metavar="SECONDS",
        help="Seconds a failed attempt's directory is kept to look into (0: none).",
    ),
]
WarmIdleOpt = Annotated[
    float,
    typer.Option(
        min=0,
        metavar="SECONDS",
        help="Seconds an idle warm function worker is kept for its owner's next call "
        "(0: every call starts a fresh sandbox and Python).",
    ),
]
HostPathsOpt = Annotated[
    bool,
    typer.Option(
        "--allow-host-paths",
        metavar="",
        help="Run jobs that name a directory of this machine (working_dir), e.g. on a "
        "shared filesystem. Only for pools whose users are all trusted with this host.",
    ),
]


def agent(
    server: ServerOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    name: NameOpt = None,
    label: LabelOpt = None,
    max_jobs: MaxJobsOpt = None,
    cpus: CpusOpt = None,
    memory: MemoryOpt = None,
    gpus: GpusOpt = None,
    work_dir: WorkDirOpt = None,
    drain_grace: DrainGraceOpt = 60.0,
    idle_exit: IdleExitOpt = 0,
    kill_grace: KillGraceOpt = 5.0,
    long_poll: LongPollOpt = 5.0,
    sandbox: SandboxOpt = "auto",
    sandbox_ro: SandboxRoOpt = None,
    allow_local_repos: LocalReposOpt = False,
    job_memory: JobMemoryOpt = None,
    job_disk: JobDiskOpt = "20G",
    keep_failed: KeepFailedOpt = 3600.0,
    warm_idle: WarmIdleOpt = 60.0,
    allow_host_paths: HostPathsOpt = False,
) -> None:
    """Run an agent in the foreground: the local one, or one serving a remote server.
    `--server` may list several servers sharing one database, comma-separated."""
    import socket

    from sandrun.home import Home

    home = Home.resolve()
    confined = _sandbox_settings(sandbox, sandbox_ro, home.root, job_memory, job_disk)
    if token_file is not None:
        token = _read_token(token_file, token)
    if server is None:
        from sandrun.agent.local import serve

        raise typer.Exit(serve(home, idle_exit or None, kill_grace, confined.kind))

    from sandrun.agent.logfields import log_to_stderr
    from sandrun.agent.settings import MAX_ATTEMPTS, AgentSettings, RunSettings
    from sandrun.agent.standalone import run_remote_agent
    from sandrun.cli.specargs import parse_pairs

    node = name or socket.gethostname()
    settings = AgentSettings(
        name=node,
        labels=parse_pairs(label or [], "labels", "--label"),
        capacity=_offered(cpus, memory, gpus),
        max_attempts=max_jobs or MAX_ATTEMPTS,
        heartbeat_every=1.0,  # a cancel reaches the job within about a second
        long_poll=long_poll,
        drain_grace=drain_grace,
        run=RunSettings(kill_grace, allow_local_repos, allow_host_paths, keep_failed, warm_idle),
    )
    log_to_stderr()
    work = work_dir or home.root / f"agent-{node}"
    raise typer.Exit(run_remote_agent(server, token, work, settings, confined))


def _sandbox_settings(
    kind: str, read_only: list[Path] | None, home: Path, memory: str | None, disk: str
) -> SandboxSettings:
    from sandrun.agent.sandbox import KINDS
    from sandrun.agent.settings import SandboxSettings

    if kind not in KINDS:
        raise ValidationError(
            f"--sandbox {kind!r} is not known",
            field="sandbox",
            suggestions=[f"use one of {', '.join(KINDS)}"],
        )
    return SandboxSettings(
        kind=kind,
        read_only=tuple(read_only or ()),
        hidden=(home,),
        job_memory_mb=_size("--job-memory", memory) if memory else None,
        job_disk_mb=_size("--job-disk", disk),
    )


def _offered(cpus: float | None, memory: str | None, gpus: str | None) -> Capacity:
    """What the agent offers: the machine's, less or more where the operator says."""
    from sandrun.agent.capacity import detect_capacity
    from sandrun.models import Capacity
    from sandrun.spec.gpus import declared_gpus

    here = detect_capacity()
    offered = Capacity(
        cpus=cpus if cpus is not None else here.cpus,
        memory_mb=_size("--memory", memory) if memory else here.memory_mb,
        gpus=here.gpus,
        gpu_type=here.gpu_type,
        gpu_memory_gb=here.gpu_memory_gb,
    )
    return offered.model_copy(update=declared_gpus(gpus)) if gpus is not None else offered


def _size(flag: str, text: str) -> int:
    from sandrun.spec import parse_memory_mb

    try:
        return parse_memory_mb(text)
    except ValueError as exc:
        raise ValidationError(
            f"{flag} {text!r}: {exc}", field=flag, suggestions=["a size such as 512M or 4G"]
        ) from None


def _read_token(path: Path, given: str | None) -> str:
    if given is not None:
        raise ValidationError(
            "give --token-file or a token ($SANDRUN_TOKEN, --token), not both",
            field="token_file",
        )
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValidationError(
            f"--token-file {str(path)!r}: {exc.strerror}", field="token_file"
        ) from None
    if not token:
        raise ValidationError(f"--token-file {str(path)!r} is empty", field="token_file")
    return token


def run_alone() -> None:
    """`sandrun agent ...` on its own: the same command, without the others' imports."""
    app = typer.Typer(add_completion=False)
    app.command()(agent)
    try:
        app(args=sys.argv[2:], prog_name="sandrun agent")
    except SandrunError as exc:
        from sandrun.cli import render

        render.error(exc)
        sys.exit(2 if isinstance(exc, ValidationError) else 1)
