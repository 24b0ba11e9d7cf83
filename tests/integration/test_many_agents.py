"""Many agents on one server: heartbeats written together, and `--workers N` processes
on one port."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from sandrun.roles import Role
from sandrun.server import open_server_service
from sandrun.states import JobState
from sandrun.store import is_postgres_url
from tests.helpers import wait_for
from tests.integration.cluster import SANDRUN, Cluster

CAPACITY = {"cpus": 1, "memory_mb": 512}


def _register(http: httpx.Client, name: str) -> str:
    reply = http.post("/v1/agent/register", json={"name": name, "capacity": CAPACITY})
    reply.raise_for_status()
    return str(reply.json()["node_id"])


def test_a_hundred_agents_beating_at_once_are_each_answered_for_their_own_node(
    cluster: Cluster,
) -> None:
    agents = {"Authorization": f"Bearer {cluster.tokens['agents']}"}
    with httpx.Client(base_url=cluster.url, headers=agents, timeout=30) as http:
        nodes = [_register(http, f"n{i}") for i in range(100)]
        alice = cluster.client()
        job = alice.submit({"command": ["true"]})
        claim = http.post("/v1/agent/claim", json={"node": nodes[7], "free": CAPACITY})
        assert claim.status_code == 200 and claim.json()["job"]["id"] == job.id
        job.cancel()
        before = time.time()

        def beat(node: str) -> httpx.Response:
            return http.post("/v1/agent/heartbeat", json={"node": node, "leases": []})

        with ThreadPoolExecutor(32) as pool:
            replies = list(pool.map(beat, nodes))
        alice.close()
    assert [r.status_code for r in replies] == [200] * 100
    # Only node 7 holds the job: it alone is told to cancel it, and that it never
    # listed the claim as held.
    told = [(i, r.json()["cancel"], r.json()["unheld"]) for i, r in enumerate(replies)]
    held = [{"job_id": job.id, "attempt": 1}]
    assert [t for t in told if t[1] or t[2]] == [(7, held, held)]
    assert all(n.heartbeat_at >= before for n in cluster.nodes() if n.name.startswith("n"))


def test_a_heartbeat_for_a_node_another_operator_registered_is_refused(
    cluster: Cluster,
) -> None:
    service = open_server_service(cluster.db)
    stranger = service.create_token("stranger", Role.AGENT)
    service.close()
    agents = {"Authorization": f"Bearer {cluster.tokens['agents']}"}
    with httpx.Client(base_url=cluster.url, headers=agents, timeout=30) as http:
        node = _register(http, "owned")
        ok = http.post("/v1/agent/heartbeat", json={"node": node})
        refused = http.post(
            "/v1/agent/heartbeat",
            json={"node": node},
            headers={"Authorization": f"Bearer {stranger}"},
        )
    assert ok.status_code == 200
    assert refused.status_code == 403 and refused.json()["field"] == "node"


@pytest.fixture
def workers(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, db=pg_url, lease=10.0, server_args=("--workers", "2"))
    c.make_tokens()
    c.start_server()
    yield c
    c.stop()


def _workers_of(cluster: Cluster) -> list[psutil.Process]:
    assert cluster.server is not None
    return psutil.Process(cluster.server.pid).children()


def test_a_server_with_two_workers_runs_each_job_once_and_replaces_a_dead_worker(
    workers: Cluster,
) -> None:
    assert is_postgres_url(workers.db)
    wait_for(lambda: len(_workers_of(workers)) == 2, what="two server workers")
    # One idle agent polls for 30 s at a time: each job that starts within seconds was
    # announced to whichever process holds the poll, through the database when the submit
    # went through the other one.
    workers.start_agent("idle", extra=("--long-poll", "30"))
    with workers.client() as alice:
        for _ in range(4):
            submitted = time.monotonic()
            job = alice.run("true")
            job.wait(10)
            assert job.record.state is JobState.COMPLETED
            assert time.monotonic() - submitted < 10
        dead = _workers_of(workers)[0]
        os.kill(dead.pid, signal.SIGKILL)
        wait_for(
            lambda: len(_workers_of(workers)) == 2 and dead not in _workers_of(workers),
            timeout=20,
            what="the dead worker to be replaced",
        )
        jobs = alice.submit_many([{"command": ["true"]}] * 20)
        for job in jobs:
            job.wait(30)
        assert [j.record.state for j in jobs] == [JobState.COMPLETED] * 20
        assert [j.record.attempts for j in jobs] == [1] * 20
    assert "server worker" in workers.server_logs()


def test_a_server_refuses_workers_without_postgresql(tmp_path: Path) -> None:
    done = subprocess.run(
        [SANDRUN, "server", "--db", str(tmp_path / "s.db"), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--workers 2 needs a PostgreSQL --db" in done.stderr


def test_the_heartbeat_path_checks_what_every_route_checks(cluster: Cluster) -> None:
    """It is answered below FastAPI (server/beats.py): the same token, role and body checks,
    the same error shape."""
    agents = {"Authorization": f"Bearer {cluster.tokens['agents']}"}
    alice = {"Authorization": f"Bearer {cluster.tokens['alice']}"}
    with httpx.Client(base_url=cluster.url, timeout=30) as http:
        with httpx.Client(base_url=cluster.url, headers=agents) as registering:
            node = _register(registering, "checked")
        anonymous = http.post("/v1/agent/heartbeat", json={"node": node})
        forged = http.post(
            "/v1/agent/heartbeat", json={"node": node}, headers={"Authorization": "Bearer nope"}
        )
        user = http.post("/v1/agent/heartbeat", json={"node": node}, headers=alice)
        bad = http.post(
            "/v1/agent/heartbeat", json={"node": node, "state": "asleep"}, headers=agents
        )
        garbled = http.post("/v1/agent/heartbeat", content=b"{not json", headers=agents)
        fine = http.post("/v1/agent/heartbeat", json={"node": node}, headers=agents)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert forged.status_code == 401 and forged.json()["code"] == "unauthorized"
    assert user.status_code == 403 and "agent API" in user.json()["message"]
    assert bad.status_code == 422 and bad.json()["field"] == "state"
    assert "active" in bad.json()["message"]  # what would be valid
    assert garbled.status_code == 422 and garbled.json()["code"] == "invalid_spec"
    assert fine.status_code == 200
    assert fine.json() == {
        "cancel": [],
        "paused": [],
        "checkpoint": [],
        "preempt": [],
        "stale": [],
        "unheld": [],
    }


def test_a_server_that_stalls_counts_its_lag_and_loses_no_running_job(cluster: Cluster) -> None:
    """A server that falls behind (here: stopped outright, as a starved host would be) must
    not blame its agents, whose heartbeats wait in its sockets. (Stalled for longer than a
    lease, an agent stops its job itself: it cannot tell a stalled server from a cut
    network, and another node may have been given the job.)"""
    assert cluster.server is not None
    cluster.start_agent("steady")
    with cluster.client() as alice:
        job = alice.submit({"command": ["sleep", "3"]})
        wait_for(lambda: job.refresh().is_running, what="the job to start")
        cluster.server.send_signal(signal.SIGSTOP)
        try:
            time.sleep(0.75 * cluster.lease)  # the fault itself
        finally:
            cluster.server.send_signal(signal.SIGCONT)
        job.wait(30)
        assert job.record.state is JobState.COMPLETED
        assert job.record.attempts == 1
    assert "lost its lease" not in cluster.server_logs()
    assert "this server lags" in cluster.server_logs()


def test_a_rogue_agents_warm_report_is_bounded(cluster: Cluster) -> None:
    """Attack: a node's warm report reaches every user's `nodes`: too many groups, or a
    group's name too long, is refused whole (422 naming the field); nothing is stored."""
    agents = {"Authorization": f"Bearer {cluster.tokens['agents']}"}
    group = {"owner": "alice", "functions": ["f"], "workers": 1, "idle": 1, "idle_timeout": 60}
    with httpx.Client(base_url=cluster.url, headers=agents, timeout=30) as http:
        node = _register(http, "boasting")
        many = http.post(
            "/v1/agent/heartbeat",
            json={"node": node, "warm": {"workers": 65, "groups": [group] * 65}},
        )
        long = http.post(
            "/v1/agent/heartbeat",
            json={"node": node, "warm": {"groups": [group | {"functions": ["x" * 129]}]}},
        )
    assert many.status_code == 422 and many.json()["field"].startswith("warm.groups")
    assert long.status_code == 422 and long.json()["field"].startswith("warm.groups.0.functions")
    with cluster.client("admin") as admin:
        [shown] = [n for n in admin.nodes() if n.id == node]
    assert shown.warm is None
