"""Telling a claim whose reply was lost from one still on its way (agent/claims.py)."""

from __future__ import annotations

from sandrun.agent.claims import ClaimBook
from sandrun.models import AttemptKey, Claim, JobRecord
from sandrun.spec import JobSpec


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 1.0  # every reading is later than the last
        return self.now


def _key(job: str) -> AttemptKey:
    return AttemptKey(job_id=job, attempt=1)


def _claim(job: str) -> Claim:
    record = JobRecord.submitted(JobSpec(command=["true"]), "alice", 0.0)
    return Claim(
        job=record.model_copy(update={"id": job}), attempt=1, token="t", lease_expires_at=1.0
    )


def test_an_unheld_attempt_with_no_claim_call_in_flight_is_given_back_at_once() -> None:
    book = ClaimBook(Clock())
    assert book.never_received([_key("j1")]) == [_key("j1")]


def test_a_received_claim_is_never_given_back() -> None:
    book = ClaimBook(Clock())
    with book.call():
        book.received(_claim("j1"))
    assert book.never_received([_key("j1")]) == []


def test_a_call_in_flight_when_it_was_named_may_still_deliver_it() -> None:
    book = ClaimBook(Clock())
    with book.call():
        assert book.never_received([_key("j1")]) == []  # the reply may be on its way
        assert book.never_received([_key("j1")]) == []
    assert book.never_received([_key("j1")]) == [_key("j1")]  # that call ended without it


def test_a_call_that_began_after_it_was_named_cannot_deliver_it() -> None:
    book = ClaimBook(Clock())
    with book.call():
        assert book.never_received([_key("j1")]) == []
    with book.call():  # a later call is in flight: it began after the claim was committed
        assert book.never_received([_key("j1")]) == [_key("j1")]


def test_an_attempt_no_longer_named_is_forgotten() -> None:
    book = ClaimBook(Clock())
    with book.call():
        assert book.never_received([_key("j1")]) == []
        assert book.never_received([]) == []  # the server stopped naming it
        with book.call():
            pass
    # Named afresh, it needs a fresh wait only if a call is in flight: none is.
    assert book.never_received([_key("j1")]) == [_key("j1")]
