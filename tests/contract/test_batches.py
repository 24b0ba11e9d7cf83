"""Fewer round trips per job: batch submits, and an attempt's end that claims the next job."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import InvalidSpec, JobNotFoundError, StoreError, ValidationError
from sandrun.models import AttemptResult, Capacity
from sandrun.service import Service
from sandrun.states import JobState
from sandrun.store import Store

TWO_CPUS = Capacity(cpus=2, memory_mb=4096)
ONE_CPU = Capacity(cpus=1, memory_mb=0)


@pytest.fixture
def service(store: Store, tmp_path: Path) -> Service:
    return Service(store, LocalArtifactStore(tmp_path / "blobs"))


def test_a_batch_is_recorded_in_order_and_claimed_in_order(service: Service) -> None:
    jobs = service.submit_many([{"command": ["echo", str(i)], "name": f"j{i}"} for i in range(5)])
    assert [j.name for j in jobs] == [f"j{i}" for i in range(5)]
    assert all(service.get(j.id).state is JobState.PENDING for j in jobs)
    assert [e.kind for e in service.events(jobs[3].id)] == ["submitted"]
    node = service.register_node("n1", TWO_CPUS)
    claimed = [service.claim(node, ONE_CPU) for _ in range(5)]
    assert [c.job.name for c in claimed if c] == [f"j{i}" for i in range(5)]


def test_one_bad_spec_refuses_the_whole_batch_naming_it(service: Service) -> None:
    specs = [{"command": ["true"]}, {"command": ["true"]}, {"command": ["true"], "cpus": -1}]
    with pytest.raises(InvalidSpec) as caught:
        service.submit_many(specs)
    assert caught.value.field == "jobs.2.cpus"
    assert caught.value.message.startswith("jobs.2: ")
    assert service.list_jobs().jobs == []


@pytest.mark.parametrize("count", [0, 1001])
def test_a_batch_holds_one_to_a_thousand_jobs(service: Service, count: int) -> None:
    with pytest.raises(ValidationError) as caught:
        service.submit_many([{"command": ["true"]}] * count)
    assert caught.value.field == "jobs"
    assert "1 to 1000" in caught.value.message
    assert service.list_jobs().jobs == []


def test_an_attempts_end_claims_the_next_job_for_the_room_it_leaves(service: Service) -> None:
    first, small, big = service.submit_many(
        [{"command": ["true"]}, {"command": ["true"], "name": "small"}, {"command": ["true"]}]
    )
    service.submit_many([{"command": ["true"], "cpus": 2, "name": "big"}])
    node = service.register_node("n1", TWO_CPUS)
    claim = service.claim(node, ONE_CPU)
    assert claim is not None and claim.job.id == first.id
    service.start(claim.ref)

    done, following = service.complete_and_claim(
        claim.ref, AttemptResult(exit_code=0), node, ONE_CPU
    )
    assert done.id == first.id and done.state is JobState.COMPLETED
    assert following is not None and following.job.name == "small"
    assert service.get(small.id).state is JobState.SCHEDULED

    # The room left is one CPU: a two-CPU job is not claimed into it.
    service.start(following.ref)
    _, after_small = service.complete_and_claim(
        following.ref, AttemptResult(exit_code=0), node, ONE_CPU
    )
    assert after_small is not None and after_small.job.id == big.id
    service.start(after_small.ref)
    _, nothing = service.complete_and_claim(
        after_small.ref, AttemptResult(exit_code=0), node, ONE_CPU
    )
    assert nothing is None
    assert [j.name for j in service.list_jobs(state="pending").jobs] == ["big"]


def test_a_node_that_is_not_live_claims_nothing_at_its_attempts_end(service: Service) -> None:
    _, second = service.submit_many([{"command": ["true"]}, {"command": ["true"]}])
    node = service.register_node("n1", TWO_CPUS)
    claim = service.claim(node, ONE_CPU)
    assert claim is not None
    service.start(claim.ref)
    service.clock = lambda: claim.lease_expires_at + 1  # its heartbeats stopped a lease ago
    done, following = service.complete_and_claim(
        claim.ref, AttemptResult(exit_code=0), node, ONE_CPU
    )
    assert done.state is JobState.COMPLETED and following is None
    assert service.get(second.id).state is JobState.PENDING


def test_a_failed_claim_after_an_attempts_end_keeps_the_result(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    (only,) = service.submit_many([{"command": ["true"]}])
    node = service.register_node("n1", TWO_CPUS)
    claim = service.claim(node, ONE_CPU)
    assert claim is not None
    service.start(claim.ref)

    def unreachable(*args: object) -> None:
        raise StoreError("the database went away")

    monkeypatch.setattr(service, "claim", unreachable)
    done, following = service.complete_and_claim(
        claim.ref, AttemptResult(exit_code=0), node, ONE_CPU
    )
    assert following is None
    assert done.state is JobState.COMPLETED and service.get(only.id).exit_code == 0


def test_waiting_on_many_jobs_tells_which_have_ended(service: Service) -> None:
    first, second = service.submit_many([{"command": ["true"]}] * 2)
    assert service.ended([first.id, second.id]) == []
    node = service.register_node("n1", TWO_CPUS)
    claim = service.claim(node, ONE_CPU)
    assert claim is not None
    service.start(claim.ref)
    service.complete(claim.ref, AttemptResult(exit_code=0))
    (ended,) = service.ended([first.id, second.id])
    assert ended.id == first.id and ended.state is JobState.COMPLETED


def test_waiting_on_an_unknown_or_anothers_job_is_refused(service: Service) -> None:
    (mine,) = service.submit_many([{"command": ["true"]}], owner="alice")
    with pytest.raises(JobNotFoundError) as caught:
        service.ended([mine.id, "no-such-job"], viewer="alice")
    assert caught.value.field == "ids" and "no-such-job" in caught.value.message
    with pytest.raises(JobNotFoundError):
        service.ended([mine.id], viewer="bob")
    with pytest.raises(ValidationError) as too_many:
        service.ended([mine.id] * 1001)
    assert too_many.value.field == "ids"
