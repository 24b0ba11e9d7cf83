"""Commands for operators: the server, agents, tokens and the node list."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sandrun.cli import render
from sandrun.cli.options import JsonOpt
from sandrun.errors import ValidationError
from sandrun.roles import Role

if TYPE_CHECKING:
    from sandrun.service.quota import PublicApi


def nodes(
    all_nodes: Annotated[
        bool, typer.Option("--all", "-a", metavar="", help="Include agents that have stopped.")
    ] = False,
    wide: Annotated[
        bool,
        typer.Option("--wide", "-w", metavar="", help="Also sandbox, labels, worker key and id."),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """List agents: state, capacity, running attempts, last heartbeat."""
    from sandrun.client import connect

    with connect() as client:
        found = [n for n in client.nodes() if all_nodes or n.state != "stopped"]
        if json:
            render.print_json(found)
        elif found:
            standing = {p.id: render.trust(p.reputation) for p in client.pool_nodes()}
            render.nodes_table(found, wide, standing)
        else:
            render.err.print("no nodes have registered")


DbOpt = Annotated[
    str | None,
    typer.Option(
        envvar="SANDRUN_DB",
        help="postgresql://user@host/db, or a SQLite file (default: $SANDRUN_HOME/server.db).",
    ),
]
ArtifactsOpt = Annotated[
    str | None,
    typer.Option(
        help="Blob directory (default: beside a SQLite file, else $SANDRUN_HOME/server-artifacts)"
        ", or s3://BUCKET/PREFIX (endpoint and credentials as boto3 reads them: "
        "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...; servers sharing a database share it)."
    ),
]
SecretsKeyOpt = Annotated[
    Path | None,
    typer.Option(
        help="Key file sealing secrets (made if missing; default: beside a SQLite file, "
        "else $SANDRUN_HOME/server-secrets.key). SANDRUN_SECRETS_KEY (base64) wins; servers "
        "sharing a database must share the key."
    ),
]

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(help="Port to listen on.")]
NoAuthOpt = Annotated[
    bool, typer.Option("--no-auth", metavar="", help="No tokens (loopback addresses only).")
]
LeaseOpt = Annotated[
    float, typer.Option(help="Seconds an agent may go silent before its jobs move.")
]
PublicApiOpt = Annotated[
    str,
    typer.Option(
        help="The public API at the root (/submit, /status...): anonymous (limited per "
        "address), token, or off."
    ),
]
PublicCorsOpt = Annotated[
    str,
    typer.Option(
        help="Origins whose pages may call the public root API from a browser: '*', "
        "comma-separated origins, or off. Never /v1 or /ui."
    ),
]
ShowIdentityOpt = Annotated[
    bool,
    typer.Option(
        "--show-identity",
        metavar="",
        help="Print this deployment's worker_id (its Ed25519 public key) and exit.",
    ),
]
AnonConcurrentOpt = Annotated[
    int, typer.Option(help="Anonymous callers: jobs queued or running per address.")
]
AnonJobsOpt = Annotated[int, typer.Option(help="Anonymous callers: jobs per hour per address.")]
AnonCpuOpt = Annotated[
    float, typer.Option(help="Anonymous callers: CPU-seconds per minute per address.")
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        help="Scheduling policy (YAML): per-owner limits (max_running_jobs, max_gpus), "
        "reserve_after, GPU prices. See docs/scheduling.md.",
    ),
]
ForwardedOpt = Annotated[
    str,
    typer.Option(
        help="Proxies whose X-Forwarded-For is believed: addresses or networks, "
        "comma-separated, or '*' (default: none, so a caller is its own address)."
    ),
]
ServerHostPathsOpt = Annotated[
    bool,
    typer.Option(
        "--allow-host-paths",
        metavar="",
        help="Accept jobs that name a directory of the node (working_dir), e.g. on a "
        "shared filesystem; agents must allow it too. Only for trusted users.",
    ),
]

WorkersOpt = Annotated[
    int,
    typer.Option(
        help="Server processes on the one port, to use more cores (PostgreSQL only; "
        "about one per core).",
    ),
]


def server(
    db: DbOpt = None,
    artifacts: ArtifactsOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8765,
    no_auth: NoAuthOpt = False,
    lease: LeaseOpt = 30.0,
    public_api: PublicApiOpt = "anonymous",
    public_cors: PublicCorsOpt = "*",
    anon_concurrent: AnonConcurrentOpt = 2,
    anon_jobs_per_hour: AnonJobsOpt = 60,
    anon_cpu_per_minute: AnonCpuOpt = 120.0,
    policy: PolicyOpt = None,
    forwarded_allow_ips: ForwardedOpt = "",
    allow_host_paths: ServerHostPathsOpt = False,
    workers: WorkersOpt = 1,
    secrets_key: SecretsKeyOpt = None,
    show_identity: ShowIdentityOpt = False,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            metavar="",
            help="To try it: also print tokens and start one agent here (loopback only).",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API (under /v1, and the public API at the root) for agents, the
    CLI, the SDK and public clients."""
    from sandrun.server import ServerSettings, run_server
    from sandrun.spec.policy import load_policy

    quota = _public_api(public_api, anon_concurrent, anon_jobs_per_hour, anon_cpu_per_minute)
    if show_identity:
        _show_identity(_server_db(db), artifacts, secrets_key)
        return
    settings = ServerSettings(
        _server_db(db),
        host=host,
        port=port,
        auth=not no_auth,
        lease_seconds=lease,
        artifacts=artifacts,
        public_api=quota,
        public_cors=public_cors,
        policy=load_policy(policy) if policy else None,
        forwarded_allow_ips=forwarded_allow_ips,
        host_paths=allow_host_paths,
        workers=workers,
        secrets_key=secrets_key,
    )
    if dev:
        from sandrun.cli.devserver import run_dev_server

        run_dev_server(settings)
    else:
        run_server(settings)


def _server_db(db: str | None) -> str:
    from sandrun.home import Home

    return db or str(Home.resolve().root / "server.db")


token_app = typer.Typer(help="API tokens for a server.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="Who it is for; a user's jobs are owned by it.")],
    role: Annotated[Role, typer.Option(help="user, agent or admin.")] = Role.USER,
    db: DbOpt = None,
) -> None:
    """Create a token and print it; it is shown only this once (the server keeps a hash)."""
    from sandrun.server import describe_db, open_server_service

    where = _server_db(db)
    service = open_server_service(where)
    try:
        print(service.create_token(name, role))
    finally:
        service.close()
    # A server accepts only the tokens in its own database: say which one this was.
    render.err.print(f"{role.value} token for {name!r} stored in {describe_db(where)}")


@token_app.command("list")
def token_list(db: DbOpt = None, json: JsonOpt = False) -> None:
    """List tokens: id, name, role, created, revoked (never the secrets)."""
    from sandrun.server import open_server_service

    service = open_server_service(_server_db(db))
    try:
        tokens = service.tokens()
    finally:
        service.close()
    if json:
        render.print_json(tokens)
    elif tokens:
        render.tokens_table(tokens)
    else:
        render.err.print("no tokens: create one with `sandrun token create`")


@token_app.command("revoke")
def token_revoke(
    token: Annotated[str, typer.Argument(help="A token's id, or a name: all its tokens.")],
    db: DbOpt = None,
) -> None:
    """Revoke a token: every server refuses it within a second."""
    from sandrun.server import open_server_service

    service = open_server_service(_server_db(db))
    try:
        count = service.revoke_token(token)
    finally:
        service.close()
    print(f"revoked {count} token(s)" if count else f"{token} was revoked already")


db_app = typer.Typer(help="The server's database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = None) -> None:
    """Apply the schema migrations this sandrun knows (back the database up first)."""
    from sandrun.server import describe_db
    from sandrun.store import Store, open_database

    target = _server_db(db)
    store = Store(open_database(target))
    try:
        before = store.schema_version()
        after = store.migrate(upgrade=True)
    finally:
        store.close()
    change = f"upgraded from {before}" if before != after else "already current"
    print(f"{describe_db(target)}: schema version {after} ({change})")


def gc(
    older_than: Annotated[
        str, typer.Option(help="Age of finished jobs to clean up, e.g. 30d, 12h.")
    ] = "30d",
    purge_jobs: Annotated[
        bool, typer.Option("--purge-jobs", metavar="", help="Delete the old jobs' records too.")
    ] = False,
    db: Annotated[
        str | None,
        typer.Option(
            envvar="SANDRUN_DB",
            help="Work on this database directly (default: $SANDRUN_URL's server, or local).",
        ),
    ] = None,
    artifacts: ArtifactsOpt = None,
    json: JsonOpt = False,
) -> None:
    """Remove finished jobs' logs (and, if asked, records), agents long gone, and blobs
    nothing refers to."""
    from sandrun.spec import parse_duration

    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise ValidationError(f"--older-than: {exc}", field="older_than") from None
    if db is None:  # the local store, or the server at $SANDRUN_URL (admins)
        from sandrun.client import connect

        with connect() as client:
            report = client.collect_garbage(age, purge_jobs=purge_jobs)
    else:
        from sandrun.server import open_server_service

        service = open_server_service(db, artifacts=artifacts)
        try:
            report = service.collect_garbage(age, purge_jobs=purge_jobs)
        finally:
            service.close()
    if json:
        render.print_json(report)
        return
    print(
        f"removed the logs of {report.jobs_logs_removed} jobs, "
        f"{report.jobs_purged} job records, {report.nodes_removed} departed agents, "
        f"{report.artifacts_removed} blobs ({report.bytes_freed} bytes)"
    )


def _public_api(mode: str, concurrent: int, per_hour: int, cpu: float) -> PublicApi:
    from sandrun.service.quota import MODES, PublicApi

    if mode not in MODES:
        raise ValidationError(
            f"--public-api {mode!r} is not a mode; use " + ", ".join(MODES), field="public_api"
        )
    return PublicApi(mode, concurrent, per_hour, cpu)


def _show_identity(db: str, artifacts: str | None, secrets_key: Path | None) -> None:
    """The deployment's worker_id, made now if no server on this database has run yet."""
    from sandrun.server import open_server_service

    service = open_server_service(db, artifacts=artifacts, secrets_key=secrets_key)
    try:
        print(service.server_identity().worker_id)
    finally:
        service.close()
