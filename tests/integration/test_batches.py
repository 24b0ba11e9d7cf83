"""Batch submits and slot refills through a real server and agent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandrun.agent.local import LocalAgent
from sandrun.agent.remote import HttpControlPlane
from sandrun.artifacts import LocalArtifactStore
from sandrun.client import connect
from sandrun.client.aio import AsyncClient
from sandrun.errors import TimeoutError
from sandrun.home import Home
from sandrun.models import AttemptKey, AttemptResult, Capacity, LogChunk, OutputFile
from sandrun.protocol import CompleteRequest, StartRequest
from sandrun.states import JobState
from tests.integration.cluster import Cluster
from tests.integration.conftest import Local


def test_a_batch_runs_in_the_order_it_was_submitted(cluster: Cluster) -> None:
    cluster.start_agent("a1", cpus=1)  # one slot: each end refills it with the next job
    with cluster.client() as client:
        jobs = client.submit_many({"shell": f"echo {i}", "name": f"j{i}"} for i in range(6))
        assert [j.record.name for j in jobs] == [f"j{i}" for i in range(6)]
        for i, job in enumerate(jobs):
            assert job.wait(60).status is JobState.COMPLETED
            assert job.log_text("stdout") == f"{i}\n"
        starts = [job.attempts[0].started_at or 0.0 for job in jobs]
        assert starts == sorted(starts)


def test_a_batch_with_one_bad_job_is_refused_whole(cluster: Cluster) -> None:
    specs = [{"command": ["true"]}, {"command": ["true"], "cpus": -1}, {"command": ["true"]}]
    headers = {"Authorization": f"Bearer {cluster.tokens['alice']}"}
    bad = httpx.post(f"{cluster.url}/v1/jobs/batch", json={"jobs": specs}, headers=headers)
    assert bad.status_code == 422
    assert bad.json()["field"] == "jobs.1.cpus"
    big = httpx.post(
        f"{cluster.url}/v1/jobs/batch", json={"jobs": [specs[0]] * 1001}, headers=headers
    )
    assert big.status_code == 422 and big.json()["field"] == "jobs"
    with cluster.client() as client:
        assert client.jobs().jobs == []


@pytest.fixture
def control(cluster: Cluster, tmp_path: Path) -> Iterator[HttpControlPlane]:
    """The agent's side of the protocol, spoken by the test itself."""
    plane = HttpControlPlane(
        cluster.url, cluster.tokens["agents"], LocalArtifactStore(tmp_path / "blobs")
    )
    yield plane
    plane.api.close()


def test_an_agent_talking_to_an_older_server_reports_and_claims_separately(
    cluster: Cluster, control: HttpControlPlane
) -> None:
    node = control.register_node("old-style", Capacity(cpus=1, memory_mb=1024))
    assert {"complete-and-claim", "hand-back"} <= control.features
    control.features.clear()  # as a server from before the features would register it
    with cluster.client() as client:
        first, second = client.submit_many([{"command": ["true"]}] * 2)
        claim = control.claim(node, Capacity(cpus=1, memory_mb=0))
        assert claim is not None and claim.job.id == first.id
        control.start(claim.ref)
        room = Capacity(cpus=1, memory_mb=0)
        done, following = control.complete_and_claim(
            claim.ref, AttemptResult(exit_code=0), node, room
        )
        assert done.state is JobState.COMPLETED and following is None
        assert second.refresh().status is JobState.PENDING
        # No hand-back route there: nothing is sent (the agent ends such a claim as lost).
        held = control.claim(node, Capacity(cpus=1, memory_mb=0))
        assert held is not None
        key = AttemptKey(job_id=held.job.id, attempt=held.attempt)
        assert control.hand_back(node, [key], "stopping") == []
        assert second.refresh().status is JobState.SCHEDULED


def test_an_agent_reports_through_an_older_server_one_call_each(
    cluster: Cluster, control: HttpControlPlane
) -> None:
    node = control.register_node("older", Capacity(cpus=1, memory_mb=1024))
    assert "report" in control.features
    control.features.discard("report")  # a server from before batched reports
    room = Capacity(cpus=1, memory_mb=0)
    with cluster.client() as client:
        first, second = client.submit_many([{"command": ["true"]}] * 2)
        claim = control.claim(node, room)
        assert claim is not None and claim.job.id == first.id
        start = StartRequest(ref=claim.ref, pid=1)
        end = CompleteRequest(ref=claim.ref, result=AttemptResult(exit_code=0))
        reply = control.report(node, [start], [end], room, max_claims=1)
        assert [o.error for o in reply.starts] == [None]
        [done] = reply.ends
        assert done.job is not None and done.job.state is JobState.COMPLETED
        assert [c.job.id for c in reply.claims] == [second.id]  # the room refilled


@pytest.mark.parametrize("server", ["current", "older"])
def test_an_ends_last_output_and_small_outputs_reach_the_server_with_it_or_before(
    cluster: Cluster, control: HttpControlPlane, server: str
) -> None:
    """To a server that lists "end-logs" and "inline-outputs" they ride with the end (one
    call); to an older one the logs and the outputs go first, each on its own."""
    node = control.register_node(f"ends-{server}", Capacity(cpus=1, memory_mb=1024))
    assert {"end-logs", "inline-outputs"} <= control.features
    if server == "older":
        control.features -= {"end-logs", "inline-outputs"}
    with cluster.client() as client:
        job = client.submit({"command": ["true"], "outputs": ["out.txt"]})
        claim = control.claim(node, Capacity(cpus=1, memory_mb=0))
        assert claim is not None and claim.job.id == job.id
        digest, size = control.artifacts.put_bytes(b"the result")
        out = OutputFile(attempt=1, path="out.txt", digest=digest, size=size)
        result = AttemptResult(exit_code=0, outputs=[out])
        chunk = LogChunk(attempt=1, seq=1, stream="stdout", data=b"hello\n", at=1.0)
        control.upload_outputs(result)  # (the agent's step: only what cannot ride along)
        end = CompleteRequest(ref=claim.ref, result=result, logs=[chunk])
        reply = control.report(node, [StartRequest(ref=claim.ref, pid=1)], [end])
        assert [o.error for o in reply.ends] == [None]
        done = job.refresh()
        assert done.record.state is JobState.COMPLETED
        assert done.log_text("stdout") == "hello\n"
        assert done.read_bytes("out.txt") == b"the result"


def test_a_client_waits_for_many_jobs_at_once(cluster: Cluster) -> None:
    with cluster.client() as client:
        quick = client.submit_many([{"shell": f"exit {i}"} for i in range(4)])
        slow = client.submit({"command": ["sleep", "30"]})
        with pytest.raises(TimeoutError):
            client.wait([*quick, slow], timeout=1)  # no agent yet: nothing ends
        cluster.start_agent("a1", cpus=2)
        done = client.wait(quick, timeout=60)
        assert [job.record.exit_code for job in done] == [0, 1, 2, 3]
        assert all(job.record.state.is_terminal for job in done)
        slow.cancel()
        (cancelled,) = client.wait([slow], timeout=60)
        assert cancelled.status is JobState.CANCELLED
        missing = httpx.post(
            f"{cluster.url}/v1/jobs/wait",
            json={"ids": [quick[0].id, "nope"], "timeout": 0},
            headers={"Authorization": f"Bearer {cluster.tokens['bob']}"},
        )
        assert missing.status_code == 404  # bob may not see alice's jobs


def test_an_embedded_client_submits_and_waits_for_many(local: Local) -> None:
    jobs = local.client.submit_many([{"shell": f"echo {i}; exit {i}"} for i in range(3)])
    done = local.client.wait(jobs, timeout=60)
    assert [job.record.exit_code for job in done] == [0, 1, 2]
    assert [job.log_text("stdout") for job in done] == ["0\n", "1\n", "2\n"]


def test_the_async_client_submits_and_waits_for_many(local: Local) -> None:
    async def main() -> list[int | None]:
        aclient = AsyncClient(local.client)
        jobs = await aclient.submit_many([{"shell": f"exit {i}"} for i in range(3)])
        done = await aclient.wait(jobs, timeout=60)
        return [job.exit_code for job in done]

    assert asyncio.run(main()) == [0, 1, 2]


class _Counted:
    """The agent's control plane, with each claim-carrying call recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.claims: list[int] = []  # jobs each claim or report call brought, if any

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        got = self.inner.claim(*args, **kwargs)
        if got is not None:  # an empty long-poll (before the submit lands) brings nothing
            self.claims.append(1)
        return got

    def report(self, *args: Any, **kwargs: Any) -> Any:
        reply = self.inner.report(*args, **kwargs)
        if reply.claims:
            self.claims.append(len(reply.claims))
        return reply


def test_an_idle_node_fills_all_its_slots_in_two_calls(home: Home) -> None:
    """A deep queue arriving at an idle node: the claim that wakes it, then one call for
    the rest of its room (not one call per slot)."""
    local = LocalAgent(home, idle_exit=None, kill_grace=0.5)
    agent = local.agent
    agent.capacity = agent.capacity.model_copy(update={"cpus": 4})
    counted = _Counted(agent.control)
    agent.control = agent.reporter.control = counted  # type: ignore[assignment]
    thread = threading.Thread(target=local.run, daemon=True)
    thread.start()
    try:
        with connect(home=home.root) as client:
            jobs = client.submit_many([{"shell": "sleep 1", "cpus": 1}] * 4)
            for job in jobs:
                assert job.wait(60).status is JobState.COMPLETED
            starts = sorted(a.started_at or 0 for j in jobs for a in j.attempts)
            assert starts[-1] - starts[0] < 1  # all four ran at once
        assert counted.claims[:2] == [1, 3]
    finally:
        local.stop()
        thread.join(30)
