"""The agent's reporter: starts and ends in order, batched while a call is in flight,
refused starts stop their attempt, claims run before the ends' room is given back."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from sandrun.agent.claims import ClaimBook
from sandrun.agent.reporter import Reporter
from sandrun.errors import ServerUnreachable, StaleAttempt
from sandrun.models import AttemptRef, AttemptResult, Capacity, Claim, ErrorBody, JobRecord
from sandrun.protocol import CompleteRequest, EndOutcome, Outcome, ReportReply, StartRequest
from sandrun.spec import JobSpec
from tests.helpers import wait_for

ROOM = Capacity(cpus=1, memory_mb=0)


def _job(n: int) -> JobRecord:
    return JobRecord.submitted(JobSpec(command=["true"]), "me", at=1.0).model_copy(
        update={"id": f"job-{n}", "attempts": 1}
    )


def _ref(n: int) -> AttemptRef:
    return AttemptRef(job_id=f"job-{n}", attempt=1, token=f"token-{n}")


class FakeControl:
    """Answers reports as a server would; `hold` keeps a call in flight until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str], Capacity | None, int]] = []
        self.refuse: set[str] = set()  # job ids whose reports are stale
        self.claims: list[Claim] = []  # handed out with the next call that asks
        self.hold = threading.Event()
        self.hold.set()
        self.lock = threading.Lock()
        self.entered = 0  # calls begun
        self.flying: Counter[tuple[str, int]] = Counter()  # attempts in calls in flight
        self.overtaken: set[tuple[str, int]] = set()  # attempts sent while in flight
        self.fail: Exception | None = None
        self.keys: list[str | None] = []

    def report(
        self,
        node: str,
        starts: Sequence[StartRequest],
        ends: Sequence[CompleteRequest],
        room: Capacity | None = None,
        max_claims: int = 0,
        claim_key: str | None = None,
    ) -> ReportReply:
        keys = {(r.ref.job_id, r.ref.attempt) for r in [*starts, *ends]}
        with self.lock:
            self.overtaken |= keys & set(self.flying)
            self.flying.update(keys)
            self.entered += 1
        self.keys.append(claim_key)
        self.hold.wait()
        with self.lock:
            self.flying.subtract(keys)
            self.flying += Counter()  # drop the zeros
        self.calls.append(
            ([s.ref.job_id for s in starts], [e.ref.job_id for e in ends], room, max_claims)
        )
        if self.fail is not None:
            raise self.fail
        stale = ErrorBody(code="stale_attempt", message="no longer holds the job")
        reply = ReportReply(
            starts=[Outcome(error=stale if s.ref.job_id in self.refuse else None) for s in starts],
            ends=[
                EndOutcome(error=stale)
                if e.ref.job_id in self.refuse
                else EndOutcome(job=_job(int(e.ref.job_id.split("-")[1])))
                for e in ends
            ],
        )
        if max_claims:
            reply.claims, self.claims = self.claims[:max_claims], self.claims[max_claims:]
        return reply


@pytest.fixture
def serving() -> Any:
    control = FakeControl()
    adopted: list[list[str]] = []
    reporter = Reporter(control, ClaimBook(), lambda cs: adopted.append([c.job.id for c in cs]))  # type: ignore[arg-type]
    reporter.start("node-1")
    yield control, reporter, adopted
    control.hold.set()
    reporter.close()


def test_an_end_is_answered_once_its_report_is_taken(serving: Any) -> None:
    control, reporter, _ = serving
    refused = threading.Event()
    reporter.started(_ref(1), 10, 1.0, None, refused=refused.set)
    ended = reporter.ended(_ref(1), AttemptResult(exit_code=0), ROOM)
    assert ended.job.id == "job-1" and not refused.is_set()
    assert not ended.refilled  # no job was waiting for its room
    starts_sent = [c[0] for c in control.calls]
    assert ["job-1"] in starts_sent  # its start went first (alone, or with its end)
    assert control.calls[-1][1:] == (["job-1"], ROOM, 1)


def test_reports_queued_behind_calls_in_flight_go_in_one_call(serving: Any) -> None:
    control, reporter, _ = serving
    control.hold.clear()
    for calls, n in enumerate((0, 9), start=1):  # both senders busy
        reporter.started(_ref(n), 10, 1.0, None, refused=lambda: None)
        wait_for(lambda calls=calls: control.entered == calls, what=f"{calls} call(s) in flight")
    done: list[str] = []
    threads = [
        threading.Thread(
            target=lambda n=n: done.append(reporter.ended(_ref(n), AttemptResult(), ROOM).job.id)
        )
        for n in (1, 2, 3)
    ]
    for t in threads:
        t.start()
    wait_for(lambda: len(reporter._queue) == 3, what="three ends to queue")
    control.hold.set()
    for t in threads:
        t.join(10)
    assert sorted(done) == ["job-1", "job-2", "job-3"]
    assert len(control.calls) == 3
    [(starts, ends, room, most)] = [c for c in control.calls if c[1]]
    assert (starts, sorted(ends), most) == ([], ["job-1", "job-2", "job-3"], 3)
    assert room == Capacity(cpus=3, memory_mb=0)  # the three ends' room together


def test_an_end_never_overtakes_its_start_in_flight(serving: Any) -> None:
    control, reporter, _ = serving
    control.hold.clear()
    reporter.started(_ref(1), 10, 1.0, None, refused=lambda: None)
    wait_for(lambda: control.entered == 1, what="the start in flight")
    ending = threading.Thread(target=reporter.ended, args=(_ref(1), AttemptResult(), None))
    ending.start()
    # A sender is free, yet the end waits for its start's call to come back.
    wait_for(lambda: len(reporter._queue) == 1, what="the end to wait in the queue")
    control.hold.set()
    ending.join(10)
    assert control.overtaken == set()
    assert [c[:2] for c in control.calls] == [(["job-1"], []), ([], ["job-1"])]


def test_a_refused_start_stops_its_attempt_and_its_end_is_refused(serving: Any) -> None:
    control, reporter, _ = serving
    control.refuse.add("job-1")
    lost = threading.Event()
    reporter.started(_ref(1), 10, 1.0, None, refused=lost.set)
    assert lost.wait(10)
    with pytest.raises(StaleAttempt):
        reporter.ended(_ref(1), AttemptResult(exit_code=0), ROOM)


def test_claims_are_adopted_before_the_ends_are_answered(serving: Any) -> None:
    control, reporter, adopted = serving
    claim = Claim(job=_job(9), attempt=1, token="t9", lease_expires_at=99.0)
    control.claims = [claim]
    ended = reporter.ended(_ref(1), AttemptResult(exit_code=0), ROOM)
    assert ended.refilled
    [key] = control.keys
    assert key  # names the claims, so that a retry gets them back
    assert adopted == [["job-9"]]  # already running when the end's room is given back
    assert reporter.claims.never_received([]) == []


def test_an_end_that_cannot_be_reported_raises_and_the_reporter_goes_on(serving: Any) -> None:
    control, reporter, _ = serving
    control.fail = ServerUnreachable("the server is away")
    with pytest.raises(ServerUnreachable):
        reporter.ended(_ref(1), AttemptResult(exit_code=0), None)
    control.fail = None
    assert reporter.ended(_ref(2), AttemptResult(exit_code=0), None).job.id == "job-2"


def test_after_close_each_report_is_sent_at_once() -> None:
    control = FakeControl()
    reporter = Reporter(control, ClaimBook(), lambda cs: None)  # type: ignore[arg-type]
    reporter.start("node-1")
    reporter.close()
    assert reporter.ended(_ref(1), AttemptResult(exit_code=0), None).job.id == "job-1"
    assert control.calls == [([], ["job-1"], None, 0)]
    assert control.keys == [None]  # no claims asked: nothing to name


def test_a_short_jobs_start_and_end_go_in_one_call() -> None:
    control = FakeControl()
    reporter = Reporter(control, ClaimBook(), lambda cs: None, linger=30.0)  # type: ignore[arg-type]
    reporter.start("node-1")
    try:
        reporter.started(_ref(1), 10, 1.0, None, refused=lambda: None)
        assert reporter.ended(_ref(1), AttemptResult(exit_code=0), ROOM).job.id == "job-1"
        assert control.calls == [(["job-1"], ["job-1"], ROOM, 1)]  # one call, one transaction
    finally:
        reporter.close()


def test_a_start_whose_end_does_not_come_goes_after_its_linger() -> None:
    control = FakeControl()
    reporter = Reporter(control, ClaimBook(), lambda cs: None, linger=0.05)  # type: ignore[arg-type]
    reporter.start("node-1")
    try:
        reporter.started(_ref(1), 10, 1.0, None, refused=lambda: None)
        wait_for(lambda: control.calls, what="the start to be sent on its own")
        assert control.calls == [(["job-1"], [], None, 0)]
    finally:
        reporter.close()
