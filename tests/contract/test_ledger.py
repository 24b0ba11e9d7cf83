"""The escrow ledger on both backends: what a job holds at submit, what it pays for what
ran (completed, failed, timed out, cancelled, lost), what comes back, and that balances
always equal their transfers — concurrent submits included."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sandrun.errors import InsufficientFunds, SandrunError, ValidationError
from sandrun.models import AttemptResult, Usage
from sandrun.service import Service
from sandrun.states import JobState
from sandrun.store import Store
from sandrun.store.postgres import PostgresDatabase
from tests.contract.pool import ROOM, add_nodes, consensus_job, pool_service, run_on

CPU_SECOND = 0.001  # the default price


@pytest.fixture
def service(store: Store, tmp_path: Path) -> Service:
    s = pool_service(store, tmp_path, ledger=True, trust_streak=1, spot_check=0.0)
    add_nodes(s, "a", "b", "c")
    s.credit("alice", 1.0)
    return s


def _job(service: Service, timeout: float = 100, **more: object) -> str:
    return service.submit({"shell": "true", "timeout": timeout, **more}, "alice").id


def _earned(service: Service, operator: str) -> float:
    rows = service.ledger(None, account=f"operator:{operator}")
    return round(sum(t.amount for t in rows if t.credit == f"operator:{operator}"), 6)


def _checked(service: Service) -> None:
    found = service.ledger_check()
    assert found.ok, found.problems


def test_a_job_holds_its_most_cost_and_pays_what_it_used(service: Service) -> None:
    job_id = _job(service, timeout=100)  # 1 CPU for at most 100 s: $0.10
    balance = service.balance("alice")
    assert (balance.available, balance.held) == (0.9, 0.1)
    run_on(service, "a", seconds=3.0)
    job = service.get(job_id)
    assert job.state is JobState.COMPLETED and job.cost == pytest.approx(3 * CPU_SECOND)
    assert _earned(service, "op-a") == 0.003
    balance = service.balance("alice")
    assert (balance.available, balance.held) == (0.997, 0.0)
    kinds = [t.kind for t in service.ledger(None, job_id=job_id)]
    assert kinds == ["hold", "payment", "refund"]
    _checked(service)


def test_a_job_that_does_not_fit_the_balance_is_refused_naming_the_shortfall(
    service: Service,
) -> None:
    with pytest.raises(InsufficientFunds, match=r"\$1 available, \$1\.5 short") as caught:
        _job(service, timeout=2500)  # $2.50
    assert caught.value.field == "max_price"
    assert service.list_jobs(limit=10).jobs == []  # nothing recorded
    assert service.balance("alice").available == 1.0
    _checked(service)


@pytest.mark.parametrize(
    ("exit_code", "reason", "paid"),
    [(1, None, 0.004), (None, "timeout", 0.004), (None, "oom", 0.004)],
)
def test_failed_and_timed_out_jobs_pay_for_what_ran(
    service: Service, exit_code: int | None, reason: str | None, paid: float
) -> None:
    job_id = _job(service)
    run_on(service, "a", exit_code=exit_code, reason=reason, seconds=4.0)  # type: ignore[arg-type]
    job = service.get(job_id)
    assert job.state is JobState.FAILED and job.cost == pytest.approx(paid)
    a = next(p for p in service.pool_nodes() if p.name == "a").reputation
    assert a.timeouts == (1 if reason == "timeout" else 0)
    assert service.balance("alice").available == pytest.approx(1.0 - paid)
    _checked(service)


def test_a_job_cancelled_before_it_ran_pays_nothing(service: Service) -> None:
    job_id = _job(service)
    service.cancel(job_id)
    assert service.get(job_id).cost == 0
    assert service.balance("alice").available == 1.0
    _checked(service)


def test_an_attempt_its_node_lost_is_not_paid(service: Service) -> None:
    job_id = _job(service)
    claim = service.store.claim("a", ROOM, service.clock(), 30)
    assert claim is not None
    service.store.start_attempt(job_id, claim.attempt, claim.token, service.clock())
    service.clock.now += 60  # type: ignore[attr-defined]  # a's lease runs out
    service.store.lose_attempts(service.decide, service.clock())
    assert service.get(job_id).state is JobState.PENDING  # retried, not using its retries
    assert run_on(service, "b", seconds=2.0) is not None
    assert service.get(job_id).cost == pytest.approx(0.002)
    assert _earned(service, "op-a") == 0 and _earned(service, "op-b") == 0.002
    standing = {p.name: p.reputation for p in service.pool_nodes()}
    assert standing["a"].lost == 1 and standing["b"].lost == 0  # a's record counts it
    _checked(service)


def test_agreeing_replicas_are_paid_the_least_claimed_and_dissenters_nothing(
    service: Service,
) -> None:
    job_id = consensus_job(service, "2-of-3", timeout=100)  # holds 3 x $0.10
    assert service.balance("alice").held == pytest.approx(0.3)
    run_on(service, "c", b"bad", seconds=1.0)
    run_on(service, "a", seconds=2.0)
    run_on(service, "b", seconds=5.0)  # claims more than a: paid a's claim
    job = service.get(job_id)
    assert job.state is JobState.COMPLETED and job.cost == pytest.approx(0.004)
    assert (_earned(service, "op-a"), _earned(service, "op-b"), _earned(service, "op-c")) == (
        0.002,
        0.002,
        0,
    )
    assert job.consensus["paid"] == {"op-a": 0.002, "op-b": 0.002}  # type: ignore[index]
    _checked(service)


def test_a_job_without_consensus_pays_nothing_and_gets_all_back(service: Service) -> None:
    job_id = consensus_job(service, {"k": 2, "n": 2, "max_replicas": 2}, timeout=100)
    run_on(service, "a", b"1", seconds=2.0)
    run_on(service, "b", b"2", seconds=2.0)
    job = service.get(job_id)
    assert job.state is JobState.FAILED and job.cost == 0
    assert service.balance("alice").available == 1.0
    _checked(service)


def test_a_cancelled_consensus_job_pays_its_replicas_for_what_they_ran(
    service: Service,
) -> None:
    job_id = consensus_job(service, "2-of-3", timeout=100)
    run_on(service, "a", seconds=2.0)  # ended with a result: its claim
    claim = service.store.claim("b", ROOM, service.clock(), 30)  # running: until now
    assert claim is not None
    service.store.start_attempt(claim.job.id, claim.attempt, claim.token, service.clock())
    service.cancel(job_id)
    job = service.get(job_id)
    assert job.state is JobState.CANCELLED
    assert _earned(service, "op-a") == 0.002
    assert 0 < _earned(service, "op-b") < 0.001  # it ran for the test's few milliseconds
    assert service.balance("alice").held == 0
    _checked(service)


def test_the_fee_and_the_priority_multiplier(store: Store, tmp_path: Path) -> None:
    service = pool_service(store, tmp_path, ledger=True, fee=0.1)
    add_nodes(service, "a")
    service.credit("alice", 1.0)
    job_id = _job(service, priority="high")  # priority > 0: prices x2
    assert service.balance("alice").held == pytest.approx(0.2)
    run_on(service, "a", seconds=10.0)  # $0.01 x 2 = $0.02, of which 10% the platform's
    assert service.get(job_id).cost == pytest.approx(0.02)
    assert _earned(service, "op-a") == 0.018
    assert service.ledger(None, account="platform")[0].amount == pytest.approx(0.002)
    _checked(service)


def test_max_price_caps_the_hold_by_shortening_the_timeout(service: Service) -> None:
    job = service.get(_job(service, timeout=1000, max_price=0.05))
    assert job.spec.timeout == 50 and job.held == pytest.approx(0.05)
    service.credit("alice", 10)
    untimed = service.get(service.submit({"shell": "true"}, "alice").id)
    assert untimed.spec.timeout == 3600  # the pool's default_timeout
    with pytest.raises(ValidationError, match="max_price") as caught:
        _job(service, max_price=0.0001, memory="2G")  # memory alone costs more
    assert caught.value.field == "max_price"


def test_transfers_cannot_be_changed_or_removed(service: Service) -> None:
    _job(service)
    for sql in ("UPDATE transfers SET amount = 1", "DELETE FROM transfers"):
        with pytest.raises(SandrunError, match="immutable"), service.store.db.transaction() as tx:
            tx.execute_raw(sql)
    _checked(service)


def test_credits_and_debits(service: Service) -> None:
    assert service.credit("alice", -0.25).available == 0.75
    with pytest.raises(InsufficientFunds):
        service.credit("alice", -5)
    assert service.credit("alice", 0).available == 0.75  # nothing to move
    _checked(service)


def test_concurrent_submits_never_overdraw(
    store: Store, service: Service, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two stores (two servers, on PostgreSQL) take holds from one balance at once."""
    if isinstance(store.db, PostgresDatabase):
        other = Store(PostgresDatabase(request.getfixturevalue("pg_url")))
    else:
        other = store
    services = [service, pool_service(other, tmp_path / "other", ledger=True)]
    accepted, refused = [], []
    barrier = threading.Barrier(20)

    def submit(i: int) -> None:
        barrier.wait()
        try:
            accepted.append(_job(services[i % 2], timeout=150))  # $0.15 each
        except InsufficientFunds:
            refused.append(i)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 6 and len(refused) == 14  # $1 holds six, never a seventh
    assert service.balance("alice").available == pytest.approx(0.1)
    _checked(service)
    if other is not store:
        other.close()


def test_a_node_is_paid_no_more_than_the_server_saw_it_hold(service: Service) -> None:
    """A rogue agent's metering (a week, a thousand CPUs, an A100) is bounded by what the
    server saw: the time from its claim to its end, and what the job reserved."""
    job_id = _job(service, timeout=100)
    got = service.store.claim("a", ROOM, service.clock(), 30)
    assert got is not None
    service.store.start_attempt(job_id, got.attempt, got.token, service.clock())
    service.clock.now += 2  # type: ignore[attr-defined]
    usage = Usage(wall_seconds=7 * 86400, cpus=1000, memory_mb=10**6, gpus=8, gpu_model="A100")
    result = AttemptResult(exit_code=0, usage=usage)
    service.store.finish_attempt(
        job_id, got.attempt, got.token, result, service.decide, service.clock()
    )
    assert service.get(job_id).cost == pytest.approx(2 * CPU_SECOND, rel=0.01)
    _checked(service)


def test_the_worked_example_of_docs_pool_md(store: Store, tmp_path: Path) -> None:
    service = pool_service(store, tmp_path, ledger=True, fee=0.05)
    add_nodes(service, "a", "b", "c")
    service.credit("alice", 10)
    job_id = consensus_job(service, "2-of-3", cpus=2, memory="1024MB", timeout=600)
    balance = service.balance("alice")
    assert (balance.available, balance.held) == (6.0928, 3.9072)
    run_on(service, "a", seconds=100)
    run_on(service, "c", b"other", seconds=90)
    run_on(service, "b", seconds=120)
    job = service.get(job_id)
    assert job.state is JobState.COMPLETED and job.cost == pytest.approx(0.6048)
    assert job.consensus["paid"] == {"op-a": 0.28728, "op-b": 0.28728}  # type: ignore[index]
    assert service.balance("alice").available == pytest.approx(9.3952)
    kinds = [t.kind for t in service.ledger(None, job_id=job_id)]
    assert kinds == ["hold", "payment", "fee", "payment", "fee", "refund"]
    _checked(service)
