"""Jobs that must agree: replicas on distinct operators, k-of-n agreement, more replicas
up to a cap, spot checks, reputation and quarantine — on both backends, each node's
result chosen by the test (an honest one, or a cheat's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandrun.errors import NodeNotFound, ValidationError
from sandrun.models import JobRecord
from sandrun.service import Service
from sandrun.states import FailureReason, JobState
from sandrun.store import Store
from tests.contract.pool import ROOM, add_nodes, consensus_job, pool_service, run_on

GOOD, BAD = b"42\n", b"41\n"


@pytest.fixture
def service(store: Store, tmp_path: Path) -> Service:
    s = pool_service(store, tmp_path, trust_streak=1, spot_check=0.0, quarantine_after=2)
    add_nodes(s, "a", "b", "c", "d")
    return s


def _read(service: Service, job_id: str) -> bytes:
    (out,) = [o for o in service.outputs(job_id) if o.path == "out"]
    return service.artifacts.read_bytes(out.digest)


def _standing(service: Service, node: str) -> tuple[int, int, int]:
    r = next(p.reputation for p in service.pool_nodes() if p.name == node)
    return r.valid, r.invalid, r.streak


def test_two_of_three_completes_with_the_honest_result_and_records_the_dissenter(
    service: Service,
) -> None:
    job_id = consensus_job(service, "2-of-3")
    assert service.get(job_id).state is JobState.WAITING
    assert "until 2 agree" in (service.why_pending(job_id) or "")
    assert run_on(service, "c", BAD) is not None  # the cheat reports first
    assert run_on(service, "a", GOOD) is not None
    assert service.get(job_id).state is JobState.WAITING  # 1 good, 1 bad: not yet
    assert run_on(service, "b", GOOD) is not None
    job = service.get(job_id)
    assert job.state is JobState.COMPLETED and job.exit_code == 0
    assert _read(service, job_id) == GOOD  # the outputs served are the agreed ones
    outcome = job.consensus
    assert isinstance(outcome, dict)
    assert outcome["k"] == 2 and outcome["n"] == 3
    assert sorted(outcome["agreeing"]) == ["a", "b"] and outcome["dissenting"] == ["c"]
    assert len(outcome["digests"]) == 2
    assert _standing(service, "a") == (1, 0, 1) and _standing(service, "c") == (0, 1, 0)


def test_one_operators_nodes_count_once(service: Service) -> None:
    add_nodes(service, "x1", "x2", operator="mallory")
    job_id = consensus_job(service, "2-of-3")
    assert run_on(service, "x1", BAD) is not None
    assert run_on(service, "x2", BAD) is None  # its operator already holds a replica
    run_on(service, "a", GOOD)
    assert service.get(job_id).state is JobState.WAITING
    run_on(service, "b", GOOD)
    job = service.get(job_id)
    assert job.state is JobState.COMPLETED and _read(service, job_id) == GOOD
    assert job.consensus["dissenting"] == ["x1"]  # type: ignore[index]


def test_more_replicas_start_while_agreement_can_still_come(service: Service) -> None:
    job_id = consensus_job(service, "2-of-2")
    run_on(service, "a", GOOD)
    run_on(service, "b", BAD)  # 1 against 1: a third replica is queued
    assert [e.kind for e in service.events(job_id)].count("replicated") == 2
    run_on(service, "c", GOOD)
    job = service.get(job_id)
    assert job.state is JobState.COMPLETED
    assert job.consensus["n"] == 3 and job.consensus["dissenting"] == ["b"]  # type: ignore[index]


def test_no_consensus_after_the_cap(service: Service) -> None:
    job_id = consensus_job(service, {"k": 2, "n": 2, "max_replicas": 3})
    for node, data in (("a", b"1"), ("b", b"2"), ("c", b"3")):
        assert run_on(service, node, data) is not None
    assert run_on(service, "d", GOOD) is None  # the cap: no fourth replica
    job = service.get(job_id)
    assert job.state is JobState.FAILED
    assert job.failure_reason is FailureReason.NO_CONSENSUS
    assert "no consensus after 3 replicas" in (job.message or "")
    assert len(job.consensus["digests"]) == 3  # type: ignore[index]
    assert service.outputs(job_id) == []  # no result is served without agreement


def test_a_replica_with_no_result_is_no_vote(service: Service) -> None:
    job_id = consensus_job(service, "2-of-2")
    run_on(service, "a", GOOD)
    run_on(service, "b", GOOD, exit_code=None, reason="timeout")  # type: ignore[arg-type]
    assert service.get(job_id).state is JobState.WAITING  # a third replica replaces it
    run_on(service, "c", GOOD)
    assert service.get(job_id).state is JobState.COMPLETED


def test_agreeing_on_a_non_zero_exit_fails_the_job_with_it(service: Service) -> None:
    job_id = consensus_job(service, "2-of-3")
    run_on(service, "a", GOOD, exit_code=3)
    run_on(service, "b", GOOD, exit_code=3)
    job = service.get(job_id)
    assert job.state is JobState.FAILED and job.exit_code == 3
    assert job.failure_reason is FailureReason.EXIT_CODE


def test_adaptive_replication_trusts_a_streak_and_a_bad_result_resets_it(
    service: Service,
) -> None:
    first = consensus_job(service, "low")
    run_on(service, "a", GOOD)  # a new node: its result is checked by a second replica
    assert service.get(first).state is JobState.WAITING
    assert [e.kind for e in service.events(first)].count("spot_check") == 1
    run_on(service, "b", GOOD)
    assert service.get(first).consensus["n"] == 2  # type: ignore[index]
    assert _standing(service, "a") == (1, 0, 1)  # a streak of 1 = trust_streak

    trusted = consensus_job(service, "low")
    run_on(service, "a", GOOD)
    job = service.get(trusted)
    assert job.state is JobState.COMPLETED and job.consensus["n"] == 1  # type: ignore[index]
    assert "unchecked" in (job.message or "")

    medium = consensus_job(service, "medium")
    run_on(service, "a", BAD)  # a cheats where it is checked
    run_on(service, "b", GOOD)
    run_on(service, "c", GOOD)
    assert _standing(service, "a") == (1, 1, 0)
    again = consensus_job(service, "low")
    run_on(service, "a", GOOD)
    assert service.get(again).state is JobState.WAITING  # checked again
    assert service.get(medium).state is JobState.COMPLETED


def test_a_spot_check_catches_a_trusted_cheat(store: Store, tmp_path: Path) -> None:
    service = pool_service(store, tmp_path, trust_streak=1, spot_check=1.0)
    add_nodes(service, "a", "b", "c")
    warm = consensus_job(service, "medium")
    for node in "abc":
        run_on(service, node, GOOD)
    assert service.get(warm).state is JobState.COMPLETED and _standing(service, "a")[2] == 1
    job_id = consensus_job(service, "low")
    run_on(service, "a", BAD)  # trusted, but spot_check 1.0 checks every result
    run_on(service, "b", GOOD)  # 1 against 1: a third replica breaks the tie
    run_on(service, "c", GOOD)
    job = service.get(job_id)
    assert job.state is JobState.COMPLETED and _read(service, job_id) == GOOD
    assert job.consensus["dissenting"] == ["a"]  # type: ignore[index]
    assert _standing(service, "a") == (1, 1, 0)


def test_a_node_with_enough_invalid_results_is_quarantined(service: Service) -> None:
    for _ in range(2):  # quarantine_after=2
        job_id = consensus_job(service, "2-of-3")
        run_on(service, "d", BAD)
        run_on(service, "a", GOOD)
        run_on(service, "b", GOOD)
        assert service.get(job_id).state is JobState.COMPLETED
    assert next(p for p in service.pool_nodes() if p.name == "d").reputation.quarantined
    assert "quarantined" in [e.kind for e in service.events(job_id)]
    consensus_job(service, "2-of-3")
    assert run_on(service, "d", GOOD) is None  # takes nothing while quarantined
    released = service.set_quarantined("d", False)
    assert released.operator_reputation.quarantined  # its operator's record is its own
    assert run_on(service, "d", GOOD) is None
    service.set_quarantined("operator:op-d", False)
    assert run_on(service, "d", GOOD) is not None
    with pytest.raises(NodeNotFound, match="no node"):
        service.set_quarantined("nobody", True)


def test_cancelling_stops_every_replica(service: Service) -> None:
    job_id = consensus_job(service, "2-of-3")
    claim = service.store.claim("a", ROOM, service.clock(), 30)
    assert claim is not None
    service.cancel(job_id)
    job = service.get(job_id)
    assert job.state is JobState.CANCELLED
    replicas = _replicas(service, job_id)
    states = sorted(r.state for r in replicas)
    assert states == [JobState.CANCELLED, JobState.CANCELLED, JobState.SCHEDULED]
    running = next(r for r in replicas if r.state is JobState.SCHEDULED)
    assert running.cancel_requested  # its agent is told to stop it


def _replicas(service: Service, job_id: str) -> list[JobRecord]:
    return [j for j in service.list_jobs(limit=100).jobs if j.replica_of == job_id]


def test_a_consensus_job_may_wait_for_another(service: Service) -> None:
    first = service.submit({"shell": "true"}, "alice")
    then = consensus_job(service, "2-of-2", after=[first.id])
    assert _replicas(service, then) == []  # none until it is released
    run_on(service, "a")
    assert len(_replicas(service, then)) == 2
    run_on(service, "b")
    run_on(service, "c")
    assert service.get(then).state is JobState.COMPLETED


def test_a_bad_consensus_is_refused_naming_it(service: Service) -> None:
    for bad, words in (
        ("4-of-3", "must not exceed"),
        ("most", "not a consensus"),
        ({"k": 2, "n": 3, "max_replicas": 2}, "max_replicas"),
    ):
        with pytest.raises(ValidationError, match=words) as caught:
            consensus_job(service, bad)
        assert (caught.value.field or "").startswith("consensus")
    assert service.list_jobs(limit=10).jobs == []
    agreed = service.get(consensus_job(service, {"k": 2, "n": 3, "agree_on": ["model.pt"]}))
    assert agreed.spec.outputs == ["out", "model.pt"]  # what must agree is collected


def test_reputable_nodes_get_high_consensus_replicas_first(store: Store, tmp_path: Path) -> None:
    service = pool_service(store, tmp_path, trust_streak=1, prefer_trusted_for=100)
    add_nodes(service, "a", "b", "c", "d")
    for pair in (("a", "b"), ("c", "a")):
        consensus_job(service, "2-of-2")
        for node in pair:
            run_on(service, node, GOOD)
    assert all(_standing(service, n)[2] >= 1 for n in "abc")
    job_id = consensus_job(service, "high")  # 3-of-5
    assert run_on(service, "d", GOOD) is None  # new: reputable nodes first
    for node in "abc":
        assert run_on(service, node, GOOD) is not None
    assert service.get(job_id).state is JobState.COMPLETED
    waiting = consensus_job(service, "high")
    service.clock.now += 101  # type: ignore[attr-defined]  # it waited: anyone may take it
    assert run_on(service, "d", GOOD) is not None
    assert service.get(waiting).state is JobState.WAITING
