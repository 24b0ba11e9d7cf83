"""The server with remote agents, as real processes on loopback: leases, fencing, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from sandrun.client import Job
from sandrun.errors import JobNotFoundError
from sandrun.states import AttemptState, FailureReason, JobState
from tests.conftest import pid_gone
from tests.helpers import make_git_repo, wait_for
from tests.integration.cluster import LEASE, SANDRUN, Cluster

# Attempt 1 parks (saying so on stderr); any later attempt finishes at once.
PARK_FIRST = (
    '[ "$SANDRUN_ATTEMPT" = 1 ] && { echo parked >&2; exec sleep 60; }; '
    'echo "done on attempt $SANDRUN_ATTEMPT"'
)


def _started(job: Job, word: str = "parked") -> int:
    """Wait until attempt 1 has said `word`; its process (the sandbox's leader) on the host."""
    wait_for(lambda: word in job.log_text("stderr"), what="attempt 1 to start")
    pid = job.attempts[0].pid
    assert pid is not None
    return pid


def _kill(pid: int) -> None:
    try:
        psutil.Process(pid).kill()
    except psutil.Error:
        pass


def _shared(tmp_path: Path) -> Path:
    """A directory sandboxed jobs (their own uid, when the agent is root) may write in."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    return shared


def _node_of(cluster: Cluster, node_id: str) -> str:
    return node_id.split("/", 1)[0]


def test_a_remote_job_runs_with_live_logs_outputs_and_exit_code(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_agent("a1")
    with cluster.client() as client:
        job = client.run(
            [
                sys.executable,
                "-c",
                "import os\nprint('hi', flush=True)\nopen('out.bin','wb').write(os.urandom(5000))\n"
                "raise SystemExit(3)",
            ],
            outputs=["out.bin"],
        )
        streamed = b"".join(c.data for c in job.chunks(follow=True))
        assert streamed == b"hi\n"
        job.wait(30)
        assert (job.record.state, job.record.exit_code) == (JobState.FAILED, 3)
        assert job.record.owner == "alice"
        [out] = job.outputs
        data = job.read_bytes("out.bin")
        assert len(data) == 5000 and out.size == 5000
        [attempt] = job.attempts
        assert _node_of(cluster, attempt.node) == "a1"


def test_kill_9_of_an_agent_moves_its_job_to_another(cluster: Cluster) -> None:
    first = cluster.start_agent("first")
    with cluster.client() as client:
        job = client.run(PARK_FIRST)
        pid = _started(job)
        cluster.start_agent("second")
        first.send_signal(signal.SIGKILL)
        try:
            job.wait(30)
            assert job.record.state is JobState.COMPLETED
            assert job.record.retries_used == 0
            a1, a2 = job.attempts
            assert (a1.state, a1.failure_reason) == (AttemptState.LOST, FailureReason.NODE_LOST)
            assert _node_of(cluster, a1.node) == "first"
            assert (a2.state, _node_of(cluster, a2.node)) == (AttemptState.COMPLETED, "second")
            assert job.log_text("stdout") == "done on attempt 2\n"
        finally:
            _kill(pid)


def test_a_frozen_agent_cannot_overwrite_the_newer_result(cluster: Cluster) -> None:
    frozen = cluster.start_agent("frozen")
    with cluster.client() as client:
        # Attempt 1 ends quickly with a different result, while its agent is frozen.
        job = client.run(
            'if [ "$SANDRUN_ATTEMPT" = 1 ]; then echo started >&2; sleep 1; echo first; exit 5; '
            "else echo second; fi"
        )
        _started(job, "started")
        os.killpg(frozen.pid, signal.SIGSTOP)
        try:
            wait_for(
                lambda: job.attempts[0].state is AttemptState.LOST,
                timeout=30,
                what="the lease to expire and the job to be retried",
            )
            cluster.start_agent("fresh")
            job.wait(30)
            assert (job.record.state, job.record.exit_code) == (JobState.COMPLETED, 0)
        finally:
            os.killpg(frozen.pid, signal.SIGCONT)
        # The thawed agent reports attempt 1 (or learns it is stale): either way, refused.
        wait_for(
            lambda: (
                "stale" in cluster.log("agent-frozen")
                or any(e.kind == "stale_report" for e in job.events)
            ),
            timeout=30,
            what="the frozen agent to be refused",
        )
        final = job.refresh().record
        assert (final.state, final.exit_code) == (JobState.COMPLETED, 0)
        assert job.log_text("stdout") == "second\n"
        assert [a.state for a in job.attempts] == [AttemptState.LOST, AttemptState.COMPLETED]


def test_kill_9_of_the_server_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    marks = _shared(tmp_path)
    cluster.start_agent("a1", cpus=4)
    with cluster.client() as client:
        jobs = [
            client.run("sleep 0.2; echo x >> $SANDRUN_JOB_ID", cpus=1, working_dir=str(marks))
            for _ in range(24)
        ]
        wait_for(lambda: len(list(marks.iterdir())) >= 4, what="some jobs to finish")
        assert cluster.server is not None
        cluster.server.send_signal(signal.SIGKILL)
        cluster.server.wait(10)
    cluster.start_server()
    with cluster.client() as client:
        for job in jobs:
            record = client.get(job.id).wait(60).record
            assert record.state is JobState.COMPLETED, record
            assert (marks / job.id).read_text() == "x\n", f"{job.id} ran to completion twice"


def test_a_thousand_jobs_over_three_agents_each_complete_once(cluster: Cluster) -> None:
    for name in ("a", "b", "c"):
        cluster.start_agent(name, cpus=2)
    with cluster.client() as client:
        jobs = [client.submit({"command": ["true"]}) for _ in range(1000)]
        nodes = set()
        for job in jobs:
            job.wait(120)
            assert job.record.state is JobState.COMPLETED
            [attempt] = (
                job.attempts
                if job.record.attempts == 1
                else pytest.fail(
                    f"{job.id} ran {job.record.attempts} times: "
                    + "; ".join(f"{e.kind}: {e.message}" for e in job.events)
                )
            )
            nodes.add(_node_of(cluster, attempt.node))
    assert nodes == {"a", "b", "c"}


def test_cancel_reaches_a_remote_job_and_kills_it(cluster: Cluster) -> None:
    cluster.start_agent("a1")
    with cluster.client() as client:
        job = client.run("sh -c 'echo parked >&2; exec sleep 60' & wait")
        pid = _started(job)
        job.cancel()
        job.wait(15)
        assert job.record.state is JobState.CANCELLED
        wait_for(lambda: pid_gone(pid), timeout=15, what="its processes to die")


def test_sigterm_drains_then_hands_back(cluster: Cluster) -> None:
    leaving = cluster.start_agent("leaving", drain_grace=1)
    with cluster.client() as client:
        job = client.run(PARK_FIRST)
        pid = _started(job)
        leaving.send_signal(signal.SIGTERM)
        assert leaving.wait(30) == 0
        wait_for(lambda: pid_gone(pid), what="the handed-back job to stop")
        assert [n.state for n in cluster.nodes() if n.name == "leaving"] == ["stopped"]
        admin = {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens["admin"]}
        listed = subprocess.run([SANDRUN, "nodes"], capture_output=True, text=True, env=admin)
        assert "leaving" not in listed.stdout  # stopped agents are hidden...
        every = subprocess.run(
            [SANDRUN, "nodes", "--all"], capture_output=True, text=True, env=admin
        )
        assert "leaving" in every.stdout and "stopped" in every.stdout  # ...unless asked
        cluster.start_agent("staying")
        job.wait(30)
        assert job.record.state is JobState.COMPLETED and job.record.retries_used == 0
        first = job.attempts[0]
        assert first.failure_reason is FailureReason.NODE_LOST
        assert "drained" in (first.message or "")


def test_an_agent_cut_off_from_the_server_stops_its_job(cluster: Cluster) -> None:
    cluster.start_agent("a1")
    with cluster.client() as client:
        job = client.run("echo parked >&2; exec sleep 60")
        job_pid = _started(job)
    assert cluster.server is not None
    os.killpg(cluster.server.pid, signal.SIGSTOP)  # every request now hangs
    try:
        wait_for(
            lambda: pid_gone(job_pid), timeout=LEASE * 6, what="the cut-off agent to stop its job"
        )
        assert "lease ran out" in cluster.log("agent-a1")
    finally:
        os.killpg(cluster.server.pid, signal.SIGCONT)


def test_max_jobs_and_labels_are_honoured(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agent("solo", cpus=4, extra=("--max-jobs", "1", "--label", "zone=a"))
    [node] = cluster.nodes()
    # Every node also carries its own name (what a volume's jobs require: docs/data.md).
    assert node.labels == {"zone": "a", "sandrun/node": "solo"} and node.capacity.cpus == 4
    shared = tmp_path / "gate"
    shared.mkdir()
    shared.chmod(0o777)  # sandboxed jobs run as uids of their own when the agent is root
    with cluster.client() as client:
        first = client.run("while [ ! -e go ]; do sleep 0.05; done", working_dir=str(shared))
        wait_for(lambda: first.refresh().is_running, timeout=60, what="the first to run")
        second = client.run("true")  # CPUs to spare, but the agent takes one job at a time
        (shared / "go").touch()
        first.wait(30)
        second.wait(30)
        # One at a time: the second was scheduled only once the first had finished.
        finished = first.attempts[0].finished_at
        assert finished is not None and second.attempts[0].scheduled_at >= finished


# --- auth and tenancy ---------------------------------------------------------------------


def test_users_see_only_their_own_jobs(cluster: Cluster) -> None:
    with (
        cluster.client("alice") as alice,
        cluster.client("bob") as bob,
        cluster.client("admin") as admin,
    ):
        job = alice.submit({"shell": "true"})
        for attempt in (
            lambda: bob.get(job.id),
            lambda: bob.cancel(job.id),
            lambda: bob.get(job.id).attempts,
        ):
            with pytest.raises(JobNotFoundError):
                attempt()
        assert bob.jobs().jobs == []
        assert [j.id for j in alice.jobs().jobs] == [job.id]
        assert [j.id for j in admin.jobs().jobs] == [job.id]
        assert alice.get(job.id).status is JobState.PENDING  # bob's cancel changed nothing


def test_tokens_are_required_and_roles_enforced(cluster: Cluster) -> None:
    base = cluster.url
    assert httpx.get(f"{base}/v1/jobs").status_code == 401
    bad = httpx.get(f"{base}/v1/jobs", headers={"Authorization": "Bearer sr_wrong"})
    assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"
    agent = {"Authorization": f"Bearer {cluster.tokens['agents']}"}
    user = {"Authorization": f"Bearer {cluster.tokens['alice']}"}
    assert httpx.get(f"{base}/v1/jobs", headers=agent).status_code == 403
    claim = {"node": "x", "free": {"cpus": 1, "memory_mb": 1}}
    assert httpx.post(f"{base}/v1/agent/claim", json=claim, headers=user).status_code == 403


def test_malformed_bodies_get_422_naming_the_field_and_change_nothing(cluster: Cluster) -> None:
    headers = {"Authorization": f"Bearer {cluster.tokens['alice']}"}
    typo = httpx.post(f"{cluster.url}/v1/jobs", json={"comand": ["true"]}, headers=headers)
    assert typo.status_code == 422
    body = typo.json()
    assert body["field"] == "comand" and "did you mean 'command'?" in body["suggestions"]
    negative = httpx.post(
        f"{cluster.url}/v1/jobs", json={"shell": "x", "timeout": -1}, headers=headers
    )
    assert negative.status_code == 422 and negative.json()["field"] == "timeout"
    garbage = httpx.post(f"{cluster.url}/v1/jobs", content=b"{not json", headers=headers)
    assert garbage.status_code == 422
    with cluster.client() as client:
        assert client.jobs().jobs == []


def test_a_remote_agent_checks_out_network_repositories_only(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_agent("n1")
    url, _ = make_git_repo(tmp_path / "repo")
    canary = tmp_path / "ext-ran"
    with cluster.client() as client:
        local = client.run("true", repository=url).wait(60)
        ext = client.run("true", repository=f"ext::touch%{canary}", upload_code=False).wait(60)
    assert local.record.state is JobState.FAILED
    assert "checks out network repositories only" in (local.record.message or "")
    assert ext.record.state is JobState.FAILED
    assert "transport 'ext' not allowed" in (ext.record.message or "")
    assert not canary.exists()
