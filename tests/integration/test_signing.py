"""Signed results through the service (what the server does on receipt) and `sandrun
verify` against a real server and agent."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import BadSignature
from sandrun.models import AttemptResult, Capacity, Claim
from sandrun.protocol import KeyProof
from sandrun.service import Service
from sandrun.signing import Identity, result_claim
from sandrun.states import AttemptState, JobState
from sandrun.store import open_sqlite
from tests.integration.cluster import SANDRUN, Cluster

FREE = Capacity(cpus=2, memory_mb=1024)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    s = Service(open_sqlite(tmp_path / "s.db"), LocalArtifactStore(tmp_path / "blobs"))
    yield s
    s.close()


def _claimed(service: Service, identity: Identity | None) -> Claim:
    at = time.time()
    node = service.register_node(
        "n1",
        FREE,
        public_key=identity.worker_id if identity else None,
        key_proof=KeyProof(at=at, signature=identity.prove("n1", at)) if identity else None,
    )
    service.submit({"shell": "true"})
    claim = service.claim(node, FREE)
    assert claim is not None
    service.start(claim.ref, pid=1)
    return claim


def _signed(identity: Identity, claim: Claim, exit_code: int) -> AttemptResult:
    signed = result_claim(claim.job.id, claim.attempt, claim.job.spec, exit_code, {})
    return AttemptResult(exit_code=exit_code, signature=identity.sign(signed))


def test_a_result_signed_by_its_agent_is_accepted_and_kept(
    service: Service, tmp_path: Path
) -> None:
    agent = Identity.load_or_create(tmp_path / "agent.key")
    claim = _claimed(service, agent)
    job = service.complete(claim.ref, _signed(agent, claim, 0))
    assert job.state is JobState.COMPLETED
    [attempt] = service.attempts(job.id)
    assert attempt.worker_id == agent.worker_id and attempt.signature is not None


@pytest.mark.parametrize("forgery", ["other key", "unsigned", "changed exit code"])
def test_a_forged_result_is_refused_and_changes_nothing(
    service: Service, tmp_path: Path, forgery: str
) -> None:
    agent = Identity.load_or_create(tmp_path / "agent.key")
    claim = _claimed(service, agent)
    if forgery == "other key":
        result = _signed(Identity.load_or_create(tmp_path / "mallory.key"), claim, 0)
    elif forgery == "unsigned":
        result = AttemptResult(exit_code=0)
    else:
        result = _signed(agent, claim, 1).model_copy(update={"exit_code": 0})
    with pytest.raises(BadSignature):
        service.complete(claim.ref, result)
    [attempt] = service.attempts(claim.job.id)
    assert attempt.state is AttemptState.RUNNING
    assert service.get(claim.job.id).state is JobState.RUNNING


def test_an_agent_without_a_key_reports_unsigned(service: Service) -> None:
    claim = _claimed(service, None)
    job = service.complete(claim.ref, AttemptResult(exit_code=0, signature="ignored"))
    assert job.state is JobState.COMPLETED
    assert service.attempts(job.id)[0].signature is None


def test_sandrun_verify_checks_a_remote_result(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agent("n1")
    agent_key = Identity.load_or_create(cluster.root / "agent-n1" / "identity.key").worker_id
    client = cluster.client()
    job = client.run(
        "mkdir out && echo weights > out/model.txt", outputs=["out/*"], upload_code=False
    ).wait(60)
    [node] = [n for n in cluster.nodes() if n.name == "n1"]
    assert node.public_key == agent_key
    assert job.attempts[-1].worker_id == agent_key

    env = {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens["alice"]}

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SANDRUN, "verify", job.id, *args], capture_output=True, text=True, env=env
        )

    ok = verify()
    assert ok.returncode == 0, ok.stderr
    assert f"signed by {agent_key}" in ok.stdout
    assert verify("--worker", agent_key).returncode == 0
    assert "not by" in verify("--worker", "someone-else").stderr
    # Countersigned by the server, with the key its public /health names.
    server_key = httpx.get(f"{cluster.url}/health").json()["worker_id"]
    assert f"countersigned by server {server_key}" in ok.stdout
    assert verify("--server", server_key).returncode == 0
    other = verify("--server", agent_key)
    assert other.returncode == 1 and f"countersigned by {server_key}, not by" in other.stderr

    job.download(tmp_path / "dl")
    assert verify("--dir", str(tmp_path / "dl")).returncode == 0
    (tmp_path / "dl" / "out" / "model.txt").write_text("poisoned\n")
    tampered = verify("--dir", str(tmp_path / "dl"))
    assert tampered.returncode == 1
    assert "out/model.txt is not the file its agent signed" in tampered.stderr
    client.close()
