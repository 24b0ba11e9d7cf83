"""Jobs that wait for jobs (`after`): each condition, skips that propagate, a cancelled
dependency, and release exactly once — on both backends."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sandrun.errors import InvalidSpec, JobNotFoundError
from sandrun.service import Service
from sandrun.service.retry import decide
from sandrun.states import JobState
from sandrun.store import Store
from tests.contract.flow import BIG, Outcome, run_queued, service_over


@pytest.fixture
def service(store: Store, tmp_path: Path) -> Service:
    return service_over(store, tmp_path)


def _state(service: Service, job_id: str) -> JobState:
    return service.get(job_id).state


@pytest.mark.parametrize(
    ("condition", "first_exit", "runs"),
    [
        ("ok", 0, True),
        ("ok", 1, False),
        ("failed", 1, True),
        ("failed", 0, False),
        ("any", 0, True),
        ("any", 1, True),
    ],
)
def test_each_condition_releases_or_skips(
    service: Service, condition: str, first_exit: int, runs: bool
) -> None:
    first = service.submit({"command": ["true"], "name": "first"})
    then = service.submit({"command": ["true"], "after": [f"{first.id}:{condition}"]})
    assert then.state is JobState.WAITING
    assert _state(service, then.id) is JobState.WAITING
    ran = run_queued(
        service, lambda job: Outcome(exit_code=first_exit if job.id == first.id else 0)
    )
    assert [j.id for j in ran] == ([first.id, then.id] if runs else [first.id])
    got = service.get(then.id)
    kinds = [e.kind for e in service.events(then.id)]
    assert kinds[:2] == ["submitted", "waiting"]
    if runs:
        assert got.state is JobState.COMPLETED
        assert "released" in kinds
    else:
        assert got.state is JobState.SKIPPED
        assert first.id in (got.message or "") and "first" in (got.message or "")


def test_the_default_condition_is_ok_and_waits_for_all(service: Service) -> None:
    a = service.submit({"command": ["true"]})
    b = service.submit({"command": ["true"]})
    then = service.submit({"command": ["true"], "after": [a.id, b.id]})
    ran = run_queued(service, lambda job: Outcome())
    assert [j.id for j in ran] == [a.id, b.id, then.id]
    assert _state(service, then.id) is JobState.COMPLETED


def test_a_skip_propagates_down_a_chain(service: Service) -> None:
    first = service.submit({"command": ["false"]})
    second = service.submit({"command": ["true"], "after": [first.id]})
    third = service.submit({"command": ["true"], "after": [second.id]})
    after_any = service.submit({"command": ["true"], "after": [f"{third.id}:any"]})
    run_queued(service, lambda job: Outcome(exit_code=1 if job.id == first.id else 0))
    assert _state(service, second.id) is JobState.SKIPPED
    assert _state(service, third.id) is JobState.SKIPPED
    assert _state(service, after_any.id) is JobState.COMPLETED  # `any` accepts a skip


def test_a_cancelled_dependency_skips_ok_and_releases_any(service: Service) -> None:
    first = service.submit({"command": ["true"]})
    on_ok = service.submit({"command": ["true"], "after": [first.id]})
    on_failed = service.submit({"command": ["true"], "after": [f"{first.id}:failed"]})
    on_any = service.submit({"command": ["true"], "after": [f"{first.id}:any"]})
    service.cancel(first.id)
    assert _state(service, on_ok.id) is JobState.SKIPPED
    assert _state(service, on_failed.id) is JobState.SKIPPED
    assert _state(service, on_any.id) is JobState.PENDING


def test_a_waiting_job_can_be_cancelled_and_its_waiters_learn_it(service: Service) -> None:
    first = service.submit({"command": ["true"]})
    middle = service.submit({"command": ["true"], "after": [first.id]})
    last = service.submit({"command": ["true"], "after": [middle.id]})
    service.cancel(middle.id)
    assert _state(service, middle.id) is JobState.CANCELLED
    assert _state(service, last.id) is JobState.SKIPPED
    run_queued(service)
    assert _state(service, first.id) is JobState.COMPLETED


def test_a_dependency_already_ended_is_judged_at_submit(service: Service) -> None:
    first = service.submit({"command": ["true"]})
    run_queued(service)
    ok = service.submit({"command": ["true"], "after": [first.id]})
    failed = service.submit({"command": ["true"], "after": [f"{first.id}:failed"]})
    assert _state(service, ok.id) is JobState.PENDING
    assert _state(service, failed.id) is JobState.SKIPPED


def test_an_unknown_or_anothers_job_is_refused_and_nothing_is_recorded(service: Service) -> None:
    theirs = service.submit({"command": ["true"]}, owner="bob")
    before = len(service.list_jobs(limit=100).jobs)
    for missing in ("no-such-job", theirs.id):
        with pytest.raises(JobNotFoundError) as caught:
            service.submit({"command": ["true"], "after": [missing]}, owner="alice")
        assert caught.value.field == "after"
    assert len(service.list_jobs(limit=100).jobs) == before
    # An admin may wait on anyone's job.
    assert service.submit({"command": ["true"], "after": [theirs.id]}, admin=True)


def test_a_bad_condition_is_refused_naming_the_field(service: Service) -> None:
    with pytest.raises(InvalidSpec) as caught:
        service.submit({"command": ["true"], "after": ["abc:sometimes"]})
    assert caught.value.field is not None and caught.value.field.startswith("after")
    assert "ok" in caught.value.message and "failed" in caught.value.message


def test_two_servers_ending_the_last_two_dependencies_release_once(
    pg_url: str, tmp_path: Path
) -> None:
    """Two stores on one PostgreSQL (two servers) end a job's two dependencies at the same
    moment, many times over: each waiter is released exactly once, never lost."""
    from sandrun.models import AttemptResult, Claim
    from sandrun.store.postgres import PostgresDatabase

    stores = [Store(PostgresDatabase(pg_url)) for _ in range(2)]
    stores[0].migrate()
    services = [service_over(s, tmp_path) for s in stores]
    try:
        waiters = []
        for _ in range(15):
            a = services[0].submit({"command": ["true"]})
            b = services[0].submit({"command": ["true"]})
            waiter = services[0].submit({"command": ["true"], "after": [a.id, b.id]})
            now = services[0].clock()
            claims = [stores[0].claim("node-a", BIG, now, 30.0) for _ in range(2)]
            for got in claims:
                assert got is not None
                stores[0].start_attempt(got.job.id, got.attempt, got.token, now)
            barrier = threading.Barrier(2)

            def end(store: Store, got: Claim | None, barrier: threading.Barrier) -> None:
                assert got is not None
                barrier.wait()
                result = AttemptResult(exit_code=0)
                store.finish_attempt(got.job.id, got.attempt, got.token, result, decide, 2e9)

            threads = [
                threading.Thread(target=end, args=(stores[i], claims[i], barrier)) for i in range(2)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            waiters.append(waiter.id)
        for waiter_id in waiters:
            assert services[1].get(waiter_id).state is JobState.PENDING
            kinds = [e.kind for e in services[1].events(waiter_id)]
            assert kinds.count("released") == 1
    finally:
        for s in stores:
            s.close()


def test_inputs_from_a_dependency_are_its_outputs_by_digest(service: Service) -> None:
    first = service.submit({"command": ["true"], "outputs": ["model.pt"]})
    then = service.submit(
        {
            "command": ["true"],
            "after": [first.id],
            "inputs_from": {"m.pt": f"{first.id}:model.pt"},
        }
    )
    # inputs_from alone makes a job wait for the jobs it names.
    missing = service.submit({"command": ["true"], "inputs_from": {"x": f"{first.id}:nope"}})
    assert missing.state is JobState.WAITING
    run_queued(
        service,
        lambda j: Outcome(outputs={"model.pt": b"weights"}) if j.id == first.id else Outcome(),
    )
    made = {o.path: o.digest for o in service.outputs(first.id)}
    got = service.get(then.id)
    assert got.state is JobState.COMPLETED
    assert got.spec.inputs == {"m.pt": made["model.pt"]}
    lost = service.get(missing.id)
    assert lost.state is JobState.FAILED
    assert lost.message == f"inputs_from.x: job {first.id} has no output 'nope'"
