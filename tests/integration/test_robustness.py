"""Robustness (issue 18): one bad value must not stall the pool, a value the store cannot
take is the caller's error (4xx, never the 503 clients retry), and an outage a little
longer than the lease must not fail good work.

Each runs against a real server (SQLite and PostgreSQL) and real agents on loopback.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from sandrun.states import FailureReason, JobState
from tests.helpers import processes_with, wait_for
from tests.integration.cluster import Cluster


def _as(cluster: Cluster, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.tokens[who]}"}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"command": ["true"], "requires": {"pool": "x\u0000"}}, "requires"),
        ({"command": ["true"], "labels": {"x": "a\u0000b"}}, "labels"),
        ({"command": ["echo", "a\u0000"]}, "command"),
        ({"shell": "true", "env": {"A": "\u0000"}}, "env"),
        ({"shell": "true", "name": "ok", "outputs": ["a\u0000"]}, "outputs"),
    ],
)
def test_a_nul_in_a_spec_is_refused_and_the_pool_keeps_scheduling(
    cluster: Cluster, spec: dict[str, Any], field: str
) -> None:
    answer = httpx.post(f"{cluster.url}/v1/jobs", json=spec, headers=_as(cluster, "alice"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert "NUL character" in answer.json()["message"]
    cluster.start_agent("a")
    with cluster.client() as client:
        assert client.jobs().jobs == []  # nothing was recorded
        job = client.run("echo fine", labels={"x": "y"}, requires={}).wait(60)
        assert job.record.state is JobState.COMPLETED
        listed = httpx.get(
            f"{cluster.url}/v1/jobs", params={"label": "x=y"}, headers=_as(cluster, "alice")
        )
        assert listed.status_code == 200 and [j["id"] for j in listed.json()["jobs"]] == [job.id]


BIG = "28032356125358211072"  # past 64 bits
INT32_PAST = "3000000000"  # past PostgreSQL's integer


def test_values_the_store_cannot_take_are_4xx_never_503(cluster: Cluster) -> None:
    with cluster.client() as client:
        job = client.submit({"shell": "true"})
    user, agent = _as(cluster, "alice"), _as(cluster, "agents")
    tries: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
        ("GET", "/v1/jobs?name=a%00b", None, user),
        ("GET", "/v1/jobs?label=a%00=b", None, user),
        ("GET", "/v1/jobs/a%00b", None, user),
        ("GET", "/v1/jobs/a%00b/logs", None, user),
        ("GET", "/status/a%00b", None, user),
        ("POST", "/v1/jobs/wait", {"ids": ["a\u0000"], "timeout": 0}, user),
        ("POST", "/v1/agent/heartbeat", {"node": "n\u0000", "leases": []}, agent),
        *(
            ("GET", f"/v1/jobs/{job.id}/{path}?{name}={value}", None, user)
            for path, name in [
                ("outputs", "attempt"),
                ("logs", "attempt"),
                ("logs", "after_seq"),
                ("logs", "after_attempt"),
                ("events", "after"),
            ]
            for value in (BIG, INT32_PAST)
        ),
    ]
    for method, path, body, headers in tries:
        answer = httpx.request(method, f"{cluster.url}{path}", json=body, headers=headers)
        assert 400 <= answer.status_code < 500, f"{method} {path}: {answer.status_code}"
        assert answer.json()["code"] in ("invalid_spec", "invalid_input", "not_found"), path
    health = httpx.get(f"{cluster.url}/v1/jobs/{job.id}", headers=user)
    assert health.status_code == 200


def _kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    os.killpg(proc.pid, sig)


def _accounting(log: str) -> tuple[Counter[str], list[str]]:
    """Each attempt's ends in an agent's log: every claimed one must end exactly once,
    as reported, refused as stale, or handed back."""
    claimed = Counter(re.findall(r"\bclaimed job=(\S+) attempt=(\d+)", log))
    ended = Counter(
        re.findall(
            r"(?:attempt ended|refused as stale|handed back)[^\n]*job=(\S+) attempt=(\d+)", log
        )
    )
    odd = [
        f"{k}: claimed {claimed[k]}, ended {ended[k]}"
        for k in claimed | ended
        if claimed[k] != ended[k]
    ]
    return claimed, odd


def test_attempts_that_end_in_an_outage_past_the_lease_are_reported(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The server is killed while jobs run; they end while it is down; it comes back after
    1.2 leases. Every result counts, none failed `internal`, nothing was retried."""
    cluster.start_agent("a", cpus=4)
    marks = tmp_path / "marks"
    marks.mkdir()
    marks.chmod(0o777)  # sandboxed jobs run as uids of their own when the agent is root
    with cluster.client() as client:
        jobs = [
            client.submit(
                {
                    "shell": f"echo started; while [ ! -e {marks}/go ]; do sleep 0.05; done; "
                    f"echo done; touch {marks}/{i}",
                    "working_dir": str(marks),
                }
            )
            for i in range(4)
        ]
        wait_for(lambda: all(j.refresh().is_running for j in jobs), timeout=60, what="all running")
        assert cluster.server is not None
        _kill(cluster.server)
        cluster.server.wait(30)
        down = time.monotonic()
        (marks / "go").touch()  # the jobs end while no server is up
        wait_for(lambda: all((marks / str(i)).exists() for i in range(4)), timeout=30, what="ends")
        time.sleep(max(0.0, down + 1.2 * cluster.lease - time.monotonic()))  # the outage
        cluster.start_server()
        for job in jobs:
            record = job.wait(60).record
            assert record.state is JobState.COMPLETED, (record.failure_reason, record.message)
            assert [a.number for a in job.attempts] == [1]  # no retry of any kind
            assert job.log_text("stdout") == "started\ndone\n"
    _, odd = _accounting(cluster.log("agent-a"))
    assert odd == []


def test_a_stale_result_is_refused_and_the_agent_says_so(cluster: Cluster, tmp_path: Path) -> None:
    """An agent stopped (SIGSTOP) past its lease loses the attempt; resumed, its report is
    refused, and its log names the attempt and what was refused."""
    agent = cluster.start_agent("a")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # sandboxed jobs run as uids of their own when the agent is root
    gate = shared / "gate"
    with cluster.client() as client:
        job = client.submit(
            {"shell": f"while [ ! -e {gate} ]; do sleep 0.05; done", "working_dir": str(shared)}
        )
        wait_for(lambda: job.refresh().is_running, timeout=60, what="the job to run")
        _kill(agent, signal.SIGSTOP)
        gate.touch()  # the job ends while its agent is stopped
        lost = lambda: [a.failure_reason for a in job.attempts][:1] == [FailureReason.NODE_LOST]  # noqa: E731
        wait_for(lost, timeout=60, what="the server to give the attempt away")
        _kill(agent, signal.SIGCONT)
        refused = "result refused as stale (the server gave the attempt away): exit code 0"
        wait_for(lambda: refused in cluster.log("agent-a"), timeout=30, what="the refusal logged")
        assert job.wait(60).record.state is JobState.COMPLETED  # its retry, on the same agent
    assert f"job={job.id} attempt=1" in next(
        line for line in cluster.log("agent-a").splitlines() if refused in line
    )
    # The retry's end is logged just after it is reported.
    wait_for(lambda: not _accounting(cluster.log("agent-a"))[1], timeout=30, what="every end")


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("backend_db", ["sqlite"], indirect=True)
def test_a_killed_agents_unsandboxed_jobs_die_with_it_or_at_its_restart(
    cluster: Cluster,
) -> None:
    """`--sandbox none`: the job's first process dies with the agent; what it forked dies
    when the agent starts again with the same work directory."""
    marker = f"4242.{os.getpid()}"
    agent = cluster.start_agent("a", extra=("--sandbox", "none"))
    with cluster.client() as client:
        job = client.submit({"shell": f"sleep {marker}1 & exec sleep {marker}2"})
        wait_for(lambda: len(processes_with(f"sleep {marker}")) == 2, timeout=60, what="both")
        (forked,) = processes_with(f"sleep {marker}1")
        (first,) = processes_with(f"sleep {marker}2")
        _kill(agent)
        agent.wait(30)
        wait_for(lambda: not _alive([first]), timeout=30, what="the first to die with the agent")
        assert _alive([forked])  # what it forked is the agent's to end when it starts again
        cluster.start_agent("a", extra=("--sandbox", "none"))
        wait_for(lambda: not _alive([forked]), timeout=30, what="the forked one to die")
        retried = lambda: [a.failure_reason for a in job.attempts][:1] == [FailureReason.NODE_LOST]  # noqa: E731
        wait_for(retried, timeout=60, what="the lost attempt to be retried")
        client.cancel(job.id)


@pytest.mark.slow
def test_300_jobs_through_a_server_crash_and_an_agent_crash(cluster: Cluster) -> None:
    """Fault injection: 300 jobs on two agents; the server is killed -9 and comes back
    after 1.2 leases; then agent b is killed -9. Every job completes; no attempt failed
    `internal`; the only lost attempts are b's, after its kill (a claim whose reply the
    crash lost is given back, not lost); every attempt agent a claimed ended in its log."""
    cluster.start_agent("a", cpus=4)
    agent_b = cluster.start_agent("b", cpus=4)
    assert cluster.server is not None
    with cluster.client() as client:
        jobs = client.submit_many([{"shell": "sleep 0.2; echo ok"}] * 300)

        def completed() -> int:
            return len(client.jobs(state=JobState.COMPLETED, limit=1000).jobs)

        wait_for(lambda: completed() >= 60, timeout=120, what="60 jobs done")
        _kill(cluster.server)
        cluster.server.wait(30)
        down = time.monotonic()
        time.sleep(max(0.0, down + 1.2 * cluster.lease - time.monotonic()))  # the outage
        cluster.start_server()
        wait_for(lambda: completed() >= 180, timeout=120, what="180 jobs done")
        b_killed = time.time()
        _kill(agent_b)
        agent_b.wait(30)
        ended = client.wait(jobs, timeout=300)
        assert {j.record.state for j in ended} == {JobState.COMPLETED}
        attempts = [a for job in ended for a in job.attempts]
    assert [a.message for a in attempts if a.failure_reason is FailureReason.INTERNAL] == []
    # A claim the server committed as it was killed, whose reply no agent read, is given
    # back unstarted (queued again, nothing counted); any other lost attempt is b's.
    given_back = [a for a in attempts if (a.message or "").startswith("handed back unstarted")]
    lost = [
        a for a in attempts if a.failure_reason is FailureReason.NODE_LOST and a not in given_back
    ]
    assert [a for a in lost if not a.node.startswith("b/")] == []  # none for the outage
    assert all((a.finished_at or 0) >= b_killed for a in lost)
    assert sum(j.record.infra_retries for j in ended) == len(lost)
    _, odd_a = _accounting(cluster.log("agent-a"))
    assert odd_a == []
    # b died with what it ran (4 slots) and perhaps a report or claim in flight, whose log
    # line it never wrote; nothing else of its is unaccounted for.
    claimed_b, odd_b = _accounting(cluster.log("agent-b"))
    assert sum(claimed_b.values()) > 0 and len(odd_b) <= 5, odd_b


def _agent_call(cluster: Cluster, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{cluster.url}/v1/agent/{path}", json=body, headers=_as(cluster, "agents"))


def _register(cluster: Cluster, name: str) -> str:
    body = {"name": name, "capacity": {"cpus": 1, "memory_mb": 1024}}
    answer = _agent_call(cluster, "register", body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["node_id"])


def test_a_claim_whose_reply_was_lost_is_given_back_with_no_retry_counted(
    cluster: Cluster,
) -> None:
    """The server committed a claim whose reply the node never read: the heartbeat names it,
    the node gives it back, and the job runs elsewhere at once as if never claimed."""
    ghost, other = _register(cluster, "ghost"), _register(cluster, "other")
    with cluster.client() as client:
        job = client.submit({"shell": "echo ran"})
        free = {"cpus": 1, "memory_mb": 1024}
        lost = _agent_call(cluster, "claim", {"node": ghost, "free": free})
        assert lost.status_code == 200 and lost.json()["job"]["id"] == job.id  # never read
        key = {"job_id": job.id, "attempt": 1}

        beat = _agent_call(cluster, "heartbeat", {"node": ghost, "leases": []})
        assert beat.status_code == 200 and beat.json()["unheld"] == [key]
        # Another node cannot give back what it does not hold.
        theirs = {"node": other, "attempts": [key], "reason": "not_received"}
        assert _agent_call(cluster, "hand-back", theirs).json() == []
        assert client.get(job.id).record.state is JobState.SCHEDULED

        mine = {"node": ghost, "attempts": [key], "reason": "not_received"}
        assert _agent_call(cluster, "hand-back", mine).json() == [key]
        assert _agent_call(cluster, "hand-back", mine).json() == []  # only once
        assert client.get(job.id).record.state is JobState.PENDING

        cluster.start_agent("a")
        done = client.wait([job], timeout=60)[0]
        attempts = done.attempts
    assert done.record.state is JobState.COMPLETED
    assert done.record.infra_retries == 0 and done.record.retries_used == 0
    first, second = attempts
    assert first.failure_reason is FailureReason.NODE_LOST
    assert first.message == f"handed back unstarted: node {ghost} never received the claim"
    assert second.node != ghost and second.exit_code == 0


def _claim_and_start(cluster: Cluster, node: str, job_id: str) -> dict[str, Any]:
    """Claim `job_id` (the only pending job) as `node` and start it; its attempt's ref."""
    free = {"cpus": 1, "memory_mb": 1024}
    claim = _agent_call(cluster, "claim", {"node": node, "free": free}).json()
    assert claim["job"]["id"] == job_id
    ref = {"job_id": job_id, "attempt": 1, "token": claim["token"]}
    assert _agent_call(cluster, "start", {"ref": ref}).status_code == 204
    return ref


def test_a_started_attempt_cannot_be_given_back(cluster: Cluster) -> None:
    ghost = _register(cluster, "ghost")
    with cluster.client() as client:
        job = client.submit({"shell": "true"})
        _claim_and_start(cluster, ghost, job.id)
        beat = _agent_call(cluster, "heartbeat", {"node": ghost, "leases": []})
        assert beat.json()["unheld"] == []  # it started: the lease decides, not a hand-back
        back = {"node": ghost, "attempts": [{"job_id": job.id, "attempt": 1}], "reason": "stopping"}
        assert _agent_call(cluster, "hand-back", back).json() == []
        assert client.get(job.id).record.state is JobState.RUNNING


def test_a_repeated_report_is_answered_as_the_first_and_a_different_one_refused(
    cluster: Cluster,
) -> None:
    """An agent whose reply was lost sends its result again: the same report gets the
    same answer (not 'stale'); a different one for the ended attempt is still refused."""
    ghost = _register(cluster, "ghost")
    with cluster.client() as client:
        job = client.submit({"shell": "true"})
        ref = _claim_and_start(cluster, ghost, job.id)
        report = {"ref": ref, "result": {"exit_code": 0}}
        first = _agent_call(cluster, "complete", report)
        again = _agent_call(cluster, "complete", report)
        assert first.status_code == again.status_code == 200, again.text
        assert again.json()["state"] == "completed"
        other = _agent_call(cluster, "complete", {"ref": ref, "result": {"exit_code": 3}})
        assert other.status_code == 409
        ended = client.get(job.id)
        assert ended.record.state is JobState.COMPLETED and ended.record.exit_code == 0
        assert len(ended.attempts) == 1


def test_a_rogue_agent_cannot_write_its_own_text_into_a_jobs_events(cluster: Cluster) -> None:
    """`unmatched_outputs` names patterns of the job's spec: any other string an agent
    sends there is not recorded, and a NUL is refused."""
    ghost = _register(cluster, "ghost")
    with cluster.client() as client:
        job = client.submit({"shell": "true", "outputs": ["*.bin"]})
        ref = _claim_and_start(cluster, ghost, job.id)
        nul = {"ref": ref, "result": {"exit_code": 0, "unmatched_outputs": ["a\u0000"]}}
        assert _agent_call(cluster, "complete", nul).status_code == 422
        forged = ["*.bin", "visit http://evil.example to fix your job", "x" * 10_000]
        report = {"ref": ref, "result": {"exit_code": 0, "unmatched_outputs": forged}}
        assert _agent_call(cluster, "complete", report).status_code == 200
        messages = [e.message for e in client.get(job.id).events if e.kind == "outputs_unmatched"]
    assert messages == ["attempt 1: no file matched output pattern '*.bin'"]
