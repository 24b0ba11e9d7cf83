"""A PostgreSQL server for the tests: $SANDRUN_TEST_PG (a postgresql:// URL), else a
throwaway cluster.

The throwaway cluster is `initdb` + `pg_ctl` under a temporary directory, run as an
unprivileged user when the tests run as root (PostgreSQL refuses root), with durability
turned off: it lives for one test session. Each test gets its own database, copied from a
template that already has the schema.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from sandrun.store import Store
from sandrun.store.postgres import PostgresDatabase

TEMPLATE = "sandrun_template"


class Unavailable(Exception):
    """No PostgreSQL can be had; the message says why."""


@dataclass
class PgServer:
    admin_url: str  # postgresql://...: a database we may CREATE DATABASE from

    def url(self, dbname: str) -> str:
        return urlsplit(self.admin_url)._replace(path=f"/{dbname}").geturl()

    def create(self, template: str = "template0") -> str:
        """A new database (a copy of `template`); returns its URL."""
        name = f"sandrun_t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        return self.url(name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def make_template(self) -> None:
        """(Re)create the migrated template the per-test databases are copied from."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        store = Store(PostgresDatabase(self.url(TEMPLATE)))
        store.migrate()
        store.close()


def _bindir() -> Path:
    pg_config = shutil.which("pg_config")
    candidates = []
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise Unavailable(
        "no initdb found (install PostgreSQL, e.g. Debian's postgresql package) "
        "and SANDRUN_TEST_PG is not set"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Tests want speed; a benchmark wants what a server would run with. synchronous_commit=off
# matches SQLite's synchronous=NORMAL: a commit survives sandrun being killed, and only a
# crash of the database host may lose the last moments.
FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
DURABLE = "-c synchronous_commit=off"


@contextmanager
def throwaway_cluster(settings: str = FAST) -> Iterator[PgServer]:
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="sandrun-pg-"))
    # PostgreSQL will not run as root: hand the directory to an unprivileged user.
    as_user: dict[str, int] = {}
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            user = pwd.getpwnam("nobody")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid}
    data, port = root / "data", _free_port()

    def run(*argv: str) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=root, **as_user)  # type: ignore[call-overload]
        if done.returncode != 0:
            raise Unavailable(f"{Path(argv[0]).name} failed: {done.stderr.strip()[-500:]}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "sandrun", "--auth=trust", "-E", "UTF8")
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300 {settings}"
        )
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
            "-o", options, "start")  # fmt: skip
        try:
            yield PgServer(f"postgresql://sandrun@127.0.0.1:{port}/postgres")
        finally:
            subprocess.run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                **as_user,  # type: ignore[call-overload]
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def pg_server() -> Iterator[PgServer]:
    """$SANDRUN_TEST_PG (a URL of a database whose user may create databases), else a
    throwaway cluster; raises Unavailable with the reason when neither can be had."""
    given = os.environ.get("SANDRUN_TEST_PG")
    if given:
        if not given.startswith(("postgresql://", "postgres://")):
            raise Unavailable(f"SANDRUN_TEST_PG must be a postgresql:// URL, not {given!r}")
        try:
            psycopg.connect(given, connect_timeout=5).close()
        except psycopg.Error as exc:
            raise Unavailable(f"SANDRUN_TEST_PG={given!r} is unreachable: {exc}") from None
        server = PgServer(given)
        server.make_template()
        try:
            yield server
        finally:
            server.drop(server.url(TEMPLATE))
        return
    with throwaway_cluster() as server:
        server.make_template()
        yield server
