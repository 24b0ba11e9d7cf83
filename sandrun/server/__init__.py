"""The HTTP server: `run_server` opens the store and serves the API with uvicorn."""

from __future__ import annotations

import errno
import ipaddress
import logging
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import uvicorn

from sandrun.artifacts.stores import open_artifacts
from sandrun.errors import ValidationError
from sandrun.home import Home
from sandrun.server.cors import origins
from sandrun.service import Service
from sandrun.service.quota import PublicApi
from sandrun.service.secretbox import SecretBox
from sandrun.spec.policy import Policy
from sandrun.store import Store, is_postgres_url, open_database


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_db(db: str) -> str:
    """The database, for messages: a PostgreSQL URL without its password."""
    if is_postgres_url(db):
        from sandrun.store.postgres import describe

        return describe(db)
    return db


def default_artifacts(db: str) -> Path:
    """Where a server keeps blobs: beside a SQLite file, else under $SANDRUN_HOME."""
    if is_postgres_url(db):
        return Home.resolve().root / "server-artifacts"
    return Path(db.removeprefix("sqlite:///")).parent / "artifacts"


def default_secrets_key(db: str) -> Path:
    """Where a server keeps the key that seals secrets: beside a SQLite file, else under
    $SANDRUN_HOME (servers sharing a PostgreSQL database must share one: give each
    SANDRUN_SECRETS_KEY or --secrets-key)."""
    if is_postgres_url(db):
        return Home.resolve().root / "server-secrets.key"
    return Path(db.removeprefix("sqlite:///")).parent / "secrets.key"


def open_server_service(
    db: str,
    lease_seconds: float = 30.0,
    *,
    artifacts: str | Path | None = None,
    upgrade: bool = False,
    policy: Policy | None = None,
    host_paths: bool = False,
    secrets_key: Path | None = None,
) -> Service:
    """The service over a server's database; an empty database gets the schema, an older
    one is refused unless `upgrade` (see `sandrun db upgrade`)."""
    if re.search(r"(^|\s)(host|dbname|user|port)=", db):
        raise ValidationError(
            "--db takes a postgresql:// URL, not libpq key=value settings",
            field="db",
            suggestions=["--db postgresql://user:password@host:5432/dbname"],
        )
    if "://" in db and not is_postgres_url(db) and not db.startswith("sqlite:///"):
        scheme = db.split("://", 1)[0]
        raise ValidationError(
            f"--db {scheme}:// is not supported; give postgresql://... or a SQLite file path",
            field="db",
            suggestions=["--db postgresql://user@host/sandrun", "--db /var/lib/sandrun/db"],
        )
    blobs = open_artifacts(artifacts or default_artifacts(db))
    store = Store(open_database(db))
    try:
        store.migrate(upgrade=upgrade)
    except BaseException:
        store.close()
        raise
    return Service(
        store,
        blobs,
        lease_seconds=lease_seconds,
        policy=policy,
        host_paths=host_paths,
        secret_box=SecretBox(key_file=secrets_key or default_secrets_key(db)),
    )


@dataclass(frozen=True)
class ServerSettings:
    """A server's settings, built once by `sandrun server`."""

    db: str  # a postgresql:// URL or a SQLite file
    host: str = "127.0.0.1"
    port: int = 8765
    auth: bool = True  # without: loopback addresses only
    lease_seconds: float = 30.0
    # The blob directory (default: see default_artifacts), or s3://BUCKET/PREFIX.
    artifacts: str | Path | None = None
    public_api: PublicApi = field(default_factory=PublicApi)
    public_cors: str = "*"  # origins the public root API answers: '*', a list, or 'off'
    policy: Policy | None = None
    # Proxies whose X-Forwarded-For and -Proto count (comma-separated addresses or
    # networks, or '*'): uvicorn's default trusts loopback, and then any local process
    # could mint anonymous callers' addresses.
    forwarded_allow_ips: str = ""
    host_paths: bool = False  # accept jobs that name a directory of the node
    secrets_key: Path | None = None  # the key file sealing secrets (see default_secrets_key)
    workers: int = 1  # server processes on one socket (PostgreSQL only when over 1)


def run_server(settings: ServerSettings, ready: Callable[[], None] | None = None) -> None:
    """Serve until interrupted. Without auth, only a loopback address is allowed.
    `ready` is called once the port is bound."""
    s = settings
    if not s.auth and not is_loopback(s.host):
        raise ValidationError(
            f"refusing to serve {s.host} without auth: anyone who can reach it could run code",
            field="host",
            suggestions=[
                "drop --no-auth and create tokens with `sandrun token create`",
                "or bind to 127.0.0.1",
            ],
        )
    _check_workers(s)
    origins(s.public_cors)  # a bad --public-cors stops it before anything is opened
    service = _open(s)  # the schema checked once, before any worker starts
    identity = service.server_identity().worker_id  # made here, once, by the first server
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if s.workers > 1:
        service.close()  # each worker opens its own: a pool does not survive a fork
    try:
        listening = bind(s.host, s.port)  # before saying where it listens
        workers = f", {s.workers} workers" if s.workers > 1 else ""
        print(
            f"sandrun server on http://{s.host}:{s.port} (auth {'on' if s.auth else 'off'}, "
            f"db {describe_db(s.db)}{workers}); identity (worker_id) {identity}",
            file=sys.stderr,
            flush=True,
        )
        if ready is not None:
            ready()
        if s.workers > 1:
            from sandrun.server.workers import serve_forked

            serve_forked(s.workers, listening, lambda: _serve(s, None, listening))
        else:
            _serve(s, service, listening)
    finally:
        if s.workers == 1:
            service.close()


def _open(s: ServerSettings) -> Service:
    return open_server_service(
        s.db,
        s.lease_seconds,
        artifacts=s.artifacts,
        policy=s.policy,
        host_paths=s.host_paths,
        secrets_key=s.secrets_key,
    )


def _serve(s: ServerSettings, service: Service | None, listening: socket.socket) -> None:
    """Serve `listening` in this process until interrupted (opening the service if None)."""
    from sandrun.server.app import create_app

    own = service is None
    if service is None:
        service = _open(s)
    try:
        app = create_app(service, auth=s.auth, public_api=s.public_api, public_cors=s.public_cors)
        config = uvicorn.Config(
            app,
            host=s.host,
            port=s.port,
            log_level="warning",
            proxy_headers=bool(s.forwarded_allow_ips),
            forwarded_allow_ips=s.forwarded_allow_ips or None,
        )
        uvicorn.Server(config).run(sockets=[listening])
    finally:
        if own:
            service.close()


def _check_workers(s: ServerSettings) -> None:
    if s.workers < 1:
        raise ValidationError(
            f"--workers {s.workers}: a server needs at least one worker process",
            field="workers",
            suggestions=["--workers 1 (the default), or up to one per core"],
        )
    if s.workers > 1 and not is_postgres_url(s.db):
        raise ValidationError(
            f"--workers {s.workers} needs a PostgreSQL --db: SQLite cannot tell one process's "
            "long-polls of the jobs submitted through another",
            field="workers",
            suggestions=["--db postgresql://user@host/sandrun", "or --workers 1"],
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or an error that says who holds the port."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listening = socket.socket(family, kind, proto)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind(address)
        listening.listen(2048)
    except OSError as exc:
        listening.close()
        if exc.errno != errno.EADDRINUSE:
            message = f"cannot listen on {host}:{port}: {exc.strerror}"
            raise ValidationError(message, field="host") from None
        holder = _listener_of(port)
        by = f" (by pid {holder})" if holder else ""
        raise ValidationError(
            f"port {port} is in use{by}", field="port", suggestions=["use another --port"]
        ) from None
    return listening


def _listener_of(port: int) -> int | None:
    """The pid listening on `port`, where this user may see it."""
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    except psutil.Error:
        pass
    return None
