"""Starts and ends reported together: one transaction, each report taken or refused alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import StaleAttempt, StoreError
from sandrun.models import AttemptResult, Capacity, LogChunk
from sandrun.protocol import CompleteRequest
from sandrun.service import Service
from sandrun.service.retry import decide
from sandrun.states import AttemptState, JobState
from sandrun.store import Store
from sandrun.store.attempts import End, Start
from tests.contract.queued import add
from tests.contract.test_store import BIG, LEASE, claim


def test_starts_and_ends_of_several_attempts_commit_together(store: Store) -> None:
    jobs = [add(store) for _ in range(3)]
    claims = [claim(store) for _ in jobs]
    starts = [Start(c.job.id, c.attempt, c.token, pid=100 + i) for i, c in enumerate(claims)]
    # The first job starts and ends in one report: its start is applied first.
    ends = [End(claims[0].job.id, 1, claims[0].token, AttemptResult(exit_code=0))]
    started, ended = store.report(starts, ends, decide, now=210.0)
    assert started == [None, None, None]
    [first] = ended
    assert not isinstance(first, Exception) and first.state is JobState.COMPLETED
    assert [store.get_job(j.id).state for j in jobs] == [
        JobState.COMPLETED,
        JobState.RUNNING,
        JobState.RUNNING,
    ]
    assert store.attempts(jobs[1].id)[0].pid == 101


def test_a_stale_report_is_refused_alone_and_recorded(store: Store) -> None:
    job = add(store)
    old = claim(store)
    assert store.lose_attempts(decide, now=200.0 + LEASE + 1) == [(job.id, 1)]
    other_job = add(store)
    again = claim(store, now=300.0)  # attempt 2 of the first job: `old` is stale
    other = claim(store, now=300.0)
    assert (again.job.id, again.attempt, other.job.id) == (job.id, 2, other_job.id)
    started, ended = store.report(
        [Start(again.job.id, again.attempt, again.token)],
        [
            End(old.job.id, old.attempt, old.token, AttemptResult(exit_code=0)),
            End(other.job.id, other.attempt, "forged", AttemptResult(exit_code=0)),
        ],
        decide,
        now=301.0,
    )
    assert started == [None]
    assert [type(e) for e in ended] == [StaleAttempt, StaleAttempt]
    assert store.get_job(job.id).state is JobState.RUNNING  # the good part committed
    assert store.get_job(other_job.id).state is JobState.SCHEDULED
    refused = [e for j in (job.id, other_job.id) for e in store.events(j)]
    assert sum(e.kind == "stale_report" for e in refused) == 2


def test_a_report_sent_again_is_taken_once(store: Store) -> None:
    """A report whose reply was lost (a server killed after its commit) is sent again."""
    add(store)
    c = claim(store)
    start = Start(c.job.id, c.attempt, c.token, pid=7)
    end = End(c.job.id, c.attempt, c.token, AttemptResult(exit_code=0))
    first = store.report([start], [end], decide, now=210.0)
    again = store.report([start], [end], decide, now=211.0)
    assert first[0] == [None]
    assert again[1] == first[1]  # the end: answered as the first time
    [refused] = again[0]  # the start names an ended attempt now: refused, nothing changed
    assert isinstance(refused, StaleAttempt)
    [attempt] = store.attempts(c.job.id)
    assert (attempt.state, attempt.pid) == (AttemptState.COMPLETED, 7)
    assert [e.kind for e in store.events(c.job.id)].count("attempt_completed") == 1


def test_a_start_sent_twice_while_running_is_taken_once(store: Store) -> None:
    add(store)
    c = claim(store)
    start = Start(c.job.id, c.attempt, c.token, pid=7)
    assert store.report([start], [], decide, now=210.0)[0] == [None]
    assert store.report([start], [], decide, now=211.0)[0] == [None]
    assert [e.kind for e in store.events(c.job.id)].count("started") == 1


def test_a_store_fault_fails_the_whole_report_for_the_agent_to_send_again(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal is one item's answer; a failing store is not a refusal of anything."""
    service = Service(store, LocalArtifactStore(tmp_path / "blobs"))
    add(store)
    c = claim(store)
    end = CompleteRequest(ref=c.ref, result=AttemptResult(exit_code=0))
    store.start_attempt(c.job.id, c.attempt, c.token, 205.0)

    def store_down(job_id: str, number: int) -> str | None:
        raise StoreError("the database is away")

    monkeypatch.setattr(store, "signer_key", store_down)
    with pytest.raises(StoreError):
        service.report("node-a", [], [end])
    monkeypatch.undo()
    [answer] = service.report("node-a", [], [end]).ends  # sent again, the store back
    assert answer.job is not None and answer.job.state is JobState.COMPLETED


def test_a_report_sent_again_gets_the_claims_its_first_try_made(
    store: Store, tmp_path: Path
) -> None:
    """Its reply was lost (a timeout, a server killed after the commit): the agent sends
    the same body again, and must not lose the claims the first try made."""
    clock = [100.0]
    service = Service(store, LocalArtifactStore(tmp_path / "blobs"), clock=lambda: clock[0])
    service.register_node("n", BIG, node_id="node-a")
    for _ in range(3):
        add(store)
    room = Capacity(cpus=2, memory_mb=0)
    first = service.report("node-a", [], [], room, max_claims=2, claim_key="k1")
    clock[0] += 25  # it came again late (the server was down): the node holds them from now
    again = service.report("node-a", [], [], room, max_claims=2, claim_key="k1")
    assert len(first.claims) == 2
    assert [(c.job.id, c.attempt, c.token) for c in again.claims] == [
        (c.job.id, c.attempt, c.token) for c in first.claims
    ]
    lease = service.lease_seconds
    assert {c.lease_expires_at for c in again.claims} == {125.0 + lease}
    held = {a.lease_expires_at for c in first.claims for a in store.attempts(c.job.id)}
    assert held == {125.0 + lease}  # renewed in the store, not only in the reply
    other = service.report("node-a", [], [], room, max_claims=2, claim_key="k2")
    assert len(other.claims) == 1  # the third job: a new key claims anew
    assert {c.job.id for c in other.claims}.isdisjoint(c.job.id for c in first.claims)
    for c in first.claims:
        store.start_attempt(c.job.id, c.attempt, c.token, 220.0)
    # Started claims are not handed out again, whatever the key.
    assert service.report("node-a", [], [], room, max_claims=2, claim_key="k1").claims == []


def test_an_ends_last_logs_are_stored_with_it_and_a_stale_ones_not_at_all(store: Store) -> None:
    job, other = add(store), add(store)
    mine, theirs = claim(store), claim(store)
    chunk = LogChunk(attempt=1, seq=1, stream="stdout", data=b"last words\n", at=205.0)
    ends = [
        End(mine.job.id, 1, mine.token, AttemptResult(exit_code=0), logs=[chunk]),
        End(theirs.job.id, 1, "forged", AttemptResult(exit_code=0), logs=[chunk]),
    ]
    _, ended = store.report([Start(mine.job.id, 1, mine.token)], ends, decide, now=210.0)
    assert isinstance(ended[1], StaleAttempt)
    assert [c.data for c in store.logs(job.id)] == [b"last words\n"]
    assert store.logs(other.id) == []
    assert store.get_job(job.id).state is JobState.COMPLETED
