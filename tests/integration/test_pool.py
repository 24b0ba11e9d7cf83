"""The pool through a real server (issue 23): honest agents as subprocesses, each with an
agent token of its own (its operator), beside rogue agents that speak the API and report
what their test tells them — a cheat's outputs, two colluding nodes of one operator.
Priced jobs hold escrow, pay the operators whose results agreed, and leave a ledger that
`sandrun ledger check` proves whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandrun.client import Client, connect
from sandrun.errors import AuthenticationError, InsufficientFunds, JobNotFoundError
from sandrun.roles import Role
from sandrun.signing import KEY_HEADER, Identity
from sandrun.states import FailureReason, JobState
from tests.helpers import wait_for
from tests.integration.cluster import SANDRUN, Cluster
from tests.integration.rogue import Rogue

GOOD, BAD = b"42\n", b"41\n"
SLOW = "sleep 2; echo 42 > out"  # honest nodes end after a rogue's instant report
POLICY = """
pool:
  ledger: true
  trust_streak: 1
  spot_check: 0
  quarantine_after: 50
  key_users: true
"""
OPERATORS = ("op-a", "op-b", "op-c", "op-m", "op-q1", "op-q2", "op-z1", "op-z2", "op-z3")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("pool")
    (root / "policy.yaml").write_text(POLICY)
    c = Cluster(
        root, db=str(root / "server.db"), server_args=("--policy", str(root / "policy.yaml"))
    )
    c.make_tokens()
    c.add_tokens(Role.AGENT, *OPERATORS)
    c.start_server()
    for name, token in (("honest-a", "op-a"), ("honest-b", "op-b")):
        c.start_agent(name, cpus=4, token=token, extra=("--label", "pool=p"))
    with c.client("admin") as admin:
        admin.credit("alice", 100)
    yield c
    c.stop()


def _rogue(cluster: Cluster, tmp_path: Path, name: str, token: str, pool: str) -> Rogue:
    rogue = Rogue(
        cluster, name, Identity.load_or_create(tmp_path / f"{name}.key"), token, {"pool": pool}
    )
    assert rogue.register().status_code == 200, "the rogue could not register"
    return rogue


def _job(
    client: Client, consensus: object, pool: str, shell: str = "sleep 2; echo 42 > out"
) -> str:
    spec = {
        "shell": shell,
        "outputs": ["out"],
        "consensus": consensus,
        "requires": {"pool": pool},
        "timeout": 60,
    }
    return client.submit(spec).id


def _ended(client: Client, job_id: str) -> Any:
    return wait_for(
        lambda: (j := client.get(job_id).record).is_terminal and j, timeout=60, what="the job"
    )


def _names(cluster: Cluster, node_ids: list[str]) -> list[str]:
    names = {n.id: n.name for n in cluster.nodes()}
    return sorted(names[i] for i in node_ids)


def test_two_of_three_completes_with_the_honest_result_and_records_the_cheat(
    cluster: Cluster, tmp_path: Path
) -> None:
    cheat = _rogue(cluster, tmp_path, "cheat-c", "op-c", "p")
    with cluster.client() as alice:
        job_id = _job(alice, "2-of-3", "p")
        claim = cheat.claim()  # the one replica the honest pair may not take
        assert claim.job.replica_of == job_id
        assert cheat.report(claim, {"out": BAD}).status_code == 200
        job = _ended(alice, job_id)
        assert job.state is JobState.COMPLETED
        assert alice.get(job_id).read_bytes("out") == GOOD  # the agreed output
        assert _names(cluster, job.consensus["agreeing"]) == ["honest-a", "honest-b"]
        assert _names(cluster, job.consensus["dissenting"]) == ["cheat-c"]
        assert job.cost is not None and job.cost > 0  # each honest node paid, the cheat not
        assert set(job.consensus["paid"]) == {"op-a", "op-b"}
    verified = _cli(cluster, "alice", "verify", job_id)  # an agreeing replica's signatures
    assert verified.returncode == 0, verified.stdout + verified.stderr
    shown = _cli(cluster, "alice", "status", job_id).stdout
    assert "2 of 3 replicas agreed, 1 dissented" in shown and "cost" in shown


def test_two_colluding_nodes_of_one_operator_do_not_make_a_quorum(
    cluster: Cluster, tmp_path: Path
) -> None:
    first = _rogue(cluster, tmp_path, "mallory-1", "op-m", "p")
    second = _rogue(cluster, tmp_path, "mallory-2", "op-m", "p")
    with cluster.client() as alice:
        job_id = _job(alice, "2-of-3", "p")
        assert first.report(first.claim(), {"out": BAD}).status_code == 200
        assert second.try_claim(wait=1) is None  # one operator, one replica
        job = _ended(alice, job_id)
        assert job.state is JobState.COMPLETED
        assert alice.get(job_id).read_bytes("out") == GOOD
        assert _names(cluster, job.consensus["dissenting"]) == ["mallory-1"]


def test_no_consensus_after_the_cap(cluster: Cluster, tmp_path: Path) -> None:
    rogues = [_rogue(cluster, tmp_path, f"z{i}", f"op-z{i}", "lonely") for i in (1, 2, 3)]
    with cluster.client() as alice:
        job_id = _job(alice, {"k": 2, "n": 2, "max_replicas": 3}, "lonely")
        for i, rogue in enumerate(rogues):
            assert rogue.report(rogue.claim(), {"out": str(i).encode()}).status_code == 200
        job = _ended(alice, job_id)
        assert job.state is JobState.FAILED
        assert job.failure_reason is FailureReason.NO_CONSENSUS
        assert len(job.consensus["digests"]) == 3
        assert job.cost == 0  # nothing agreed: nobody is paid, all of it comes back


def test_adaptive_replication_and_a_spot_check(cluster: Cluster, tmp_path: Path) -> None:
    """Real agents new to the pool are checked, then trusted; a trusted rogue's cheat
    resets its streak, and under a policy of spot checks a trusted cheat is caught."""
    cluster.start_agent("q1", cpus=2, token="op-q1", extra=("--label", "pool=q"))
    cluster.start_agent("q2", cpus=2, token="op-q2", extra=("--label", "pool=q"))
    with cluster.client() as alice:
        first = _ended(alice, _job(alice, "low", "q", "echo 42 > out"))
        assert first.state is JobState.COMPLETED and first.consensus["n"] == 2  # checked
        second = _ended(alice, _job(alice, "low", "q", "echo 42 > out"))
        assert second.consensus["n"] == 1  # a reputable node: not replicated
        assert "unchecked" in (second.message or "")

    z = [_rogue(cluster, tmp_path, f"w{i}", f"op-z{i}", "w") for i in (1, 2, 3)]
    with cluster.client() as alice:
        earn = _job(alice, "2-of-2", "w")
        for rogue in z[:2]:
            rogue.report(rogue.claim(), {"out": GOOD})
        assert _ended(alice, earn).state is JobState.COMPLETED
        trusted = _job(alice, "low", "w")
        z[0].report(z[0].claim(), {"out": GOOD})
        assert _ended(alice, trusted).consensus["n"] == 1
        cheat = _job(alice, "2-of-3", "w")
        z[0].report(z[0].claim(), {"out": BAD})
        for rogue in z[1:]:
            rogue.report(rogue.claim(), {"out": GOOD})
        assert _ended(alice, cheat).state is JobState.COMPLETED
        standing = {p.name: p.reputation for p in alice.pool_nodes()}
        assert standing["w1"].streak == 0 and standing["w1"].invalid == 1
        checked = _job(alice, "low", "w")
        z[0].report(z[0].claim(), {"out": GOOD})
        assert alice.get(checked).status is JobState.WAITING  # its streak is gone: checked
        z[1].report(z[1].claim(), {"out": GOOD})
        assert _ended(alice, checked).consensus["n"] == 2

    # A second server whose policy spot-checks every result: w2, trusted, cheats.
    (cluster.root / "strict.yaml").write_text(POLICY.replace("spot_check: 0", "spot_check: 1"))
    strict = cluster.start_other_server(("--policy", str(cluster.root / "strict.yaml")))
    for rogue in z:  # SQLite: a server hears of its own submits only
        rogue.url = strict
    with _client(strict, cluster) as alice:
        caught = _job(alice, "low", "w")
        z[1].report(z[1].claim(), {"out": BAD})
        z[0].report(z[0].claim(), {"out": GOOD})
        z[2].report(z[2].claim(), {"out": GOOD})
        job = _ended(alice, caught)
        assert job.state is JobState.COMPLETED and alice.get(caught).read_bytes("out") == GOOD
        assert _names(cluster, job.consensus["dissenting"]) == ["w2"]


def _client(url: str, cluster: Cluster) -> Client:
    return connect(url, token=cluster.tokens["alice"])


def _cli(cluster: Cluster, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens[who]}
    return subprocess.run(
        [SANDRUN, *args], capture_output=True, text=True, env=env, timeout=120, cwd=cluster.root
    )


def test_the_ledger_from_the_command_line(cluster: Cluster) -> None:
    assert _cli(cluster, "admin", "credit", "bob", "2.5").returncode == 0
    before = json.loads(_cli(cluster, "bob", "balance", "--json").stdout)
    assert before == {"available": 2.5, "held": 0.0}
    ran = _cli(
        cluster, "bob", "run", "--json", "--timeout", "30", "--require", "pool=p",
        "--consensus", "2-of-2", "--", "sh", "-c", "echo hi",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    record = json.loads(ran.stdout)
    assert record["state"] == "completed" and record["consensus"]["k"] == 2
    assert record["cost"] > 0
    after = json.loads(_cli(cluster, "bob", "balance", "--json").stdout)
    assert after["available"] == pytest.approx(2.5 - record["cost"]) and after["held"] == 0
    entries = json.loads(_cli(cluster, "bob", "ledger", "--job", record["id"], "--json").stdout)
    assert entries[0]["kind"] == "hold" and entries[-1]["kind"] == "refund"
    report = json.loads(_cli(cluster, "bob", "cost", "--since", "1h", "--json").stdout)
    assert report["total"] == pytest.approx(record["cost"])
    refused = _cli(cluster, "bob", "run", "--timeout", "100000", "--", "true")
    assert refused.returncode == 2 and "short" in refused.stderr
    assert _cli(cluster, "bob", "ledger", "check").returncode != 0  # admins only
    checked = _cli(cluster, "admin", "ledger", "check")
    assert checked.returncode == 0 and "ledger ok" in checked.stdout, checked.stderr
    status = _cli(cluster, "alice", "pool", "status")
    assert "agreement" in status.stdout and "ledger      on" in status.stdout


def test_an_admin_quarantines_and_releases_a_node(cluster: Cluster, tmp_path: Path) -> None:
    rogue = _rogue(cluster, tmp_path, "suspect", "op-c", "s")
    assert _cli(cluster, "alice", "node", "quarantine", "suspect").returncode != 0
    done = _cli(cluster, "admin", "node", "quarantine", "suspect")
    assert done.returncode == 0 and "suspect quarantined" in done.stdout
    with cluster.client() as alice:
        job_id = alice.submit({"shell": "true", "requires": {"pool": "s"}, "timeout": 5}).id
        assert rogue.try_claim(wait=1) is None
        assert "quarantined" in _cli(cluster, "admin", "nodes").stdout  # TRUST
        assert _cli(cluster, "admin", "node", "release", "suspect").returncode == 0
        claim = rogue.claim()
        assert claim.job.id == job_id


def _priced_cluster(root: Path, db: str) -> Cluster:
    (root / "policy.yaml").write_text("pool:\n  ledger: true\n")
    c = Cluster(root, db=db, server_args=("--policy", str(root / "policy.yaml")))
    c.make_tokens()
    c.add_tokens(Role.AGENT, "op-1", "op-2")
    return c


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_ledger_holds_after_a_kill_9_storm(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Agents and the server killed with SIGKILL while priced jobs (plain and 2-of-2) run:
    every job ends, none holds escrow, and the balances equal their transfers."""
    db = str(tmp_path / "server.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    cluster = _priced_cluster(tmp_path, db)
    cluster.start_server()
    try:
        agents = {n: cluster.start_agent(n, cpus=2, token=f"op-{n[-1]}") for n in ("s1", "s2")}
        with cluster.client("admin") as admin:
            admin.credit("alice", 50)
        with cluster.client() as alice:
            specs: list[dict[str, Any]] = [
                {"shell": "sleep 0.5", "timeout": 30, **({"consensus": "2-of-2"} if i % 4 else {})}
                for i in range(24)
            ]
            ids = [j.id for j in alice.submit_many(specs)]
            for victim in ("s1", "server", "s2"):
                wait_for(lambda: _ended_count(alice, ids) >= 1, timeout=60, what="progress")
                proc = cluster.server if victim == "server" else agents[victim]
                assert proc is not None
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
                if victim == "server":
                    cluster.start_server()
                else:
                    agents[victim] = cluster.start_agent(victim, cpus=2, token=f"op-{victim[-1]}")
            wait_for(lambda: _ended_count(alice, ids) == len(ids), timeout=180, what="every job")
            assert {alice.get(i).record.state for i in ids} == {JobState.COMPLETED}
        checked = _cli(cluster, "admin", "ledger", "check", "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        report = json.loads(checked.stdout)
        assert report["ok"] and report["escrow"] == 0
        with cluster.client() as alice:
            balance = alice.balance()
            spent = sum(alice.get(i).record.cost or 0 for i in ids)
        assert balance.held == 0 and balance.available == pytest.approx(50 - spent, abs=1e-6)
    finally:
        cluster.stop()


def _ended_count(client: Client, ids: list[str]) -> int:
    try:
        return sum(1 for i in ids if client.get(i).record.is_terminal)
    except Exception:  # the server is being restarted
        return 0


def test_concurrent_submits_through_two_servers_never_overdraw(pg_url: str, tmp_path: Path) -> None:
    cluster = _priced_cluster(tmp_path, pg_url)
    cluster.start_server()
    try:
        urls = [cluster.url, cluster.start_other_server()]
        with cluster.client("admin") as admin:
            admin.credit("alice", 1)
        headers = {"Authorization": f"Bearer {cluster.tokens['alice']}"}
        spec = {"shell": "true", "timeout": 150}  # holds $0.15
        codes: list[int] = []
        barrier = threading.Barrier(20)

        def submit(i: int) -> None:
            barrier.wait()
            answer = httpx.post(f"{urls[i % 2]}/v1/jobs", json=spec, headers=headers, timeout=60)
            codes.append(answer.status_code)
            if answer.status_code == 409:
                assert answer.json()["code"] == "insufficient_funds"

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) == [201] * 6 + [409] * 14
        with cluster.client() as alice:
            assert alice.balance().available == pytest.approx(0.1)
        with cluster.client("admin") as admin:
            assert admin.ledger_check().ok
    finally:
        cluster.stop()


def test_an_identity_without_an_account_signs_its_requests(
    cluster: Cluster, tmp_path: Path
) -> None:
    key = tmp_path / "me.key"
    shown = _cli(cluster, "alice", "key", str(key))
    account = shown.stdout.strip()
    assert shown.returncode == 0 and account.startswith("key:")
    spec = {"shell": "echo hi", "timeout": 10, "requires": {"pool": "p"}}
    with connect(cluster.url, key=key) as me:
        with pytest.raises(InsufficientFunds):  # a new key has nothing yet
            me.submit(spec)
        assert me.balance().owner == account
    assert _cli(cluster, "admin", "credit", account, "1").returncode == 0
    with connect(cluster.url, key=key) as me:
        job = me.submit(spec)
        assert job.wait(60).record.state is JobState.COMPLETED
        assert job.record.owner == account
        assert 0 < me.balance().available < 1
        assert [j.id for j in me.jobs().jobs] == [job.id]  # its own, and only those
    with cluster.client() as alice, pytest.raises(JobNotFoundError):
        alice.get(job.id)

    identity = Identity.load_or_create(key)
    body = json.dumps(spec).encode()

    def signed(at: float, signer: Identity = identity) -> dict[str, str]:
        headers = signer.request_headers("POST", "/v1/jobs", body, at)
        headers[KEY_HEADER] = identity.worker_id
        return {**headers, "content-type": "application/json"}

    url = f"{cluster.url}/v1/jobs"
    once = signed(time.time())
    assert httpx.post(url, content=body, headers=once).status_code == 201
    replay = httpx.post(url, content=body, headers=once)
    assert replay.status_code == 401 and "replay" in replay.json()["message"]
    forged = signed(time.time(), Identity.load_or_create(tmp_path / "other.key"))
    assert httpx.post(url, content=body, headers=forged).status_code == 401
    stale = httpx.post(url, content=body, headers=signed(time.time() - 3600))
    assert stale.status_code == 401 and "clock" in stale.json()["message"]
    tampered = httpx.post(url, content=body.replace(b"hi", b"ho"), headers=signed(time.time()))
    assert tampered.status_code == 401
    with connect(cluster.url, key=key) as me:
        assert len(me.jobs().jobs) == 2  # the replay, the forgery and the rest made none

    (cluster.root / "tokens-only.yaml").write_text("pool:\n  ledger: true\n")
    strict = cluster.start_other_server(("--policy", str(cluster.root / "tokens-only.yaml")))
    with connect(strict, key=key) as me, pytest.raises(AuthenticationError, match="tokens"):
        me.balance()
