"""The HTTP server: `run_server` opens the store and serves the API with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import sys
from pathlib import Path

import uvicorn

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import InvalidInput
from sandrun.service import Service
from sandrun.store import open_sqlite


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sqlite_path(db: str) -> Path:
    """A SQLite database from a path or a sqlite:/// URL."""
    if db.startswith("sqlite:///"):
        return Path(db.removeprefix("sqlite:///"))
    if "://" in db:
        scheme = db.split("://", 1)[0]
        raise InvalidInput(
            f"--db {scheme}:// is not supported yet; give a SQLite file path",
            field="db",
            suggestions=["sandrun server --db /var/lib/sandrun/sandrun.db"],
        )
    return Path(db)


def open_server_service(db: str, lease_seconds: float = 30.0) -> Service:
    path = sqlite_path(db)
    return Service(
        open_sqlite(path),
        LocalArtifactStore(path.parent / "artifacts"),
        lease_seconds=lease_seconds,
    )


def run_server(db: str, *, host: str, port: int, auth: bool, lease_seconds: float = 30.0) -> None:
    """Serve until interrupted. Without auth, only a loopback address is allowed."""
    if not auth and not is_loopback(host):
        raise InvalidInput(
            f"refusing to serve {host} without auth: anyone who can reach it could run code",
            field="host",
            suggestions=[
                "drop --no-auth and create tokens with `sandrun token create`",
                "or bind to 127.0.0.1",
            ],
        )
    from sandrun.server.app import create_app

    service = open_server_service(db, lease_seconds)
    app = create_app(service, auth=auth)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    print(
        f"sandrun server on http://{host}:{port} (auth {'on' if auth else 'off'}, db {db})",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        service.close()
