from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandrun.embedded import agent_running
from sandrun.home import Home
from tests.helpers import wait_for
from tests.integration.cluster import Cluster, free_port
from tests.pg import PgServer, Unavailable, pg_server


def _stop_local_agent(home: Home) -> None:
    """Stop a background agent a test left behind (it would otherwise idle out)."""
    if not agent_running(home):
        return
    pid = int(home.agent_lock.read_text().strip())
    if pid == os.getpid():  # an agent on a thread of this test process: its test stops it
        return
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    except psutil.Error:
        pass


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A fresh $SANDRUN_HOME; any local agent started under it is stopped afterwards."""
    h = Home(tmp_path / "sandrun-home")
    monkeypatch.setenv("SANDRUN_HOME", str(h.root))
    monkeypatch.setenv("SANDRUN_IDLE_EXIT", "20")
    monkeypatch.setenv("SANDRUN_KILL_GRACE", "0.5")
    monkeypatch.delenv("SANDRUN_URL", raising=False)
    yield h
    _stop_local_agent(h)
    wait_for(lambda: not agent_running(h), timeout=10, what="the local agent to stop")


def pid_gone(pid: int) -> bool:
    """True when `pid` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def no_service(reason: str) -> None:
    """Skip for want of a service, except in CI, where a missing service is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: services must be available)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """A PostgreSQL server for this test session (see tests/pg.py)."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(pg_server())
        except Unavailable as exc:
            no_service(f"PostgreSQL unavailable: {exc}")
        yield server


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3-compatible server (moto's, in this process), as its endpoint URL. Its request
    recorder (off until a test starts it) writes under the test's temporary directory:
    moto reads where when it is first imported, here."""
    os.environ["MOTO_RECORDER_FILEPATH"] = str(tmp_path_factory.mktemp("moto") / "recording")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def pg_url(pg: PgServer) -> Iterator[str]:
    """A database of its own for one test, with the current schema."""
    url = pg.create(template="sandrun_template")
    yield url
    pg.drop(url)


@pytest.fixture(params=["sqlite", "postgres"])
def backend_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A server database on each backend: a SQLite path or a PostgreSQL URL."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "server.db")


@pytest.fixture
def cluster(tmp_path: Path, backend_db: str) -> Iterator[Cluster]:
    """A server (lease 2 s) with tokens for admin, agents, alice and bob; agents on demand;
    once on SQLite and once on PostgreSQL."""
    c = Cluster(tmp_path, db=backend_db, host_paths=True)  # jobs may mark a shared directory
    c.make_tokens()
    c.start_server()
    yield c
    c.stop()
