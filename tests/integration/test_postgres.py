"""Several servers on one PostgreSQL database: shared wake-ups, scale, losing a server."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandrun.client import Job
from sandrun.states import JobState
from sandrun.store.postgres import PostgresDatabase
from tests.helpers import wait_for
from tests.integration.cluster import Cluster
from tests.pg import throwaway_cluster


@pytest.fixture
def shared(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    """One server on a PostgreSQL database (a second one on demand); a 10 s lease, so only
    a real failure, not a slow machine, moves a job."""
    c = Cluster(tmp_path, db=pg_url, lease=10.0, host_paths=True)  # a shared marks directory
    c.make_tokens()
    c.start_server()
    yield c
    c.stop()


def test_an_idle_agent_is_woken_by_a_submit_through_the_other_server(shared: Cluster) -> None:
    other = shared.start_other_server()
    # The agent knows only the other server and waits up to 30 s per poll: a job that
    # starts within seconds was announced across servers, not found by a new poll.
    shared.start_agent("idle", url=other, extra=("--long-poll", "30"))
    with shared.client() as alice:
        for _ in range(3):
            submitted = time.monotonic()
            job = alice.run("true")
            job.wait(10)
            assert job.record.state is JobState.COMPLETED
            assert time.monotonic() - submitted < 10


def _submit(url: str, token: str, count: int, command: str, workdir: Path, into: list[Job]) -> None:
    from sandrun.client import connect

    with connect(url, token=token) as client:
        into.extend(client.run(command, working_dir=str(workdir)) for _ in range(count))


@pytest.mark.slow
def test_two_servers_and_four_agents_run_5000_jobs_once_each_despite_losing_a_server(
    shared: Cluster, tmp_path: Path
) -> None:
    a, b = shared.url, shared.start_other_server()
    for name, urls in [
        ("a1", f"{a},{b}"),
        ("a2", f"{a},{b}"),
        ("b1", f"{b},{a}"),
        ("b2", f"{b},{a}"),
    ]:
        shared.start_agent(name, url=urls)
    marks = tmp_path / "marks"
    marks.mkdir()
    marks.chmod(0o777)  # sandboxed jobs run as uids of their own when the agent is root
    # Each run appends its attempt number to a file named for its job.
    command = 'echo "$SANDRUN_ATTEMPT" >> "$SANDRUN_JOB_ID"'
    token = shared.tokens["alice"]
    via_a: list[Job] = []
    via_b: list[Job] = []
    submitters = [
        threading.Thread(target=_submit, args=(a, token, 2500, command, marks, via_a)),
        threading.Thread(target=_submit, args=(b, token, 2500, command, marks, via_b)),
    ]
    for t in submitters:
        t.start()
    for t in submitters:
        t.join()
    assert len(via_a) == len(via_b) == 2500

    wait_for(lambda: len(os.listdir(marks)) >= 1500, timeout=240, what="1,500 jobs to run")
    assert shared.server is not None
    os.killpg(shared.server.pid, signal.SIGKILL)  # mid-run: agents and clients move to b
    wait_for(lambda: len(os.listdir(marks)) >= 5000, timeout=240, what="all 5,000 jobs to run")

    from sandrun.client import connect

    with connect(b, token=shared.tokens["admin"]) as admin:
        # a1 and a2 moved to b: still heartbeating, so their jobs kept their leases.
        live = {n.name for n in admin.nodes() if n.state == "active"}
        assert live == {"a1", "a2", "b1", "b2"}
    with connect(b, token=shared.tokens["alice"]) as client:
        for job in via_a + via_b:
            done = client.get(job.id)
            done.wait(60)
            assert done.record.state is JobState.COMPLETED, done.record
    runs = {p.name: p.read_text().split() for p in marks.iterdir()}
    assert set(runs) == {job.id for job in via_a + via_b}
    twice = {job_id: attempts for job_id, attempts in runs.items() if len(attempts) != 1}
    assert twice == {}, f"{len(twice)} jobs ran more than once"
    logs = shared.server_logs()
    assert "deadlock" not in logs and "Traceback" not in logs


def test_a_lane_gets_its_own_connection_while_the_shared_pool_is_taken(pg_url: str) -> None:
    """The server's heartbeats run in a lane: reports and claims holding every pooled
    connection must not make them wait."""
    db = PostgresDatabase(pg_url, max_connections=1)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction(write=False):
            held.set()
            release.wait(30)

    def in_lane(into: list[object]) -> None:
        with db.lane("heartbeats"), db.transaction(write=False) as tx:
            into.extend(tx.execute_raw("SELECT 1 AS one"))

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        got: list[object] = []
        beat = threading.Thread(target=in_lane, args=(got,))
        beat.start()
        beat.join(10)  # the shared pool would keep it waiting 30 s, then fail
        assert not beat.is_alive() and got == [{"one": 1}]
    finally:
        release.set()
        holder.join()
        db.close()


def test_a_server_whose_database_went_away_still_stops(tmp_path: Path) -> None:
    """Its reaper, on the heartbeats' connection, may be waiting for a database that is
    gone: SIGTERM must still end the server."""
    with throwaway_cluster() as pg:
        c = Cluster(tmp_path, db=pg.create(), lease=1.0)
        c.make_tokens()
        server = c.start_server()
    try:
        # The database is gone: stop while the reaper waits (30 s) for its own connection.
        wait_for(
            lambda: "error connecting in 'sandrun-heartbeats'" in c.server_logs(),
            timeout=60,
            what="the reaper to wait for its connection",
        )
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) is not None
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
