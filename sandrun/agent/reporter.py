"""Attempts' starts and ends, sent in order and in batches: a call carries what every
attempt had to say while the calls before it were in flight (two at most).

A start is sent without holding the job up: the job runs from its gate at once, and if
the server refuses the start (the attempt lost its job meanwhile) the attempt is stopped
as lost. It waits a moment (`LINGER`) for its attempt's end, so that a short job's start
and end go together. An end waits for its answer: a result counts once the server has committed it.
The call that carries ends also claims jobs for the room they leave, so a busy node
refills its slots without a round trip of its own.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from sandrun.agent.claims import ClaimBook
from sandrun.agent.control import ControlPlane
from sandrun.error_codes import rebuilt
from sandrun.errors import SandrunError
from sandrun.models import AttemptRef, AttemptResult, Capacity, Claim, JobRecord, LogChunk
from sandrun.protocol import MAX_REPORTS, CompleteRequest, StartRequest

log = logging.getLogger("sandrun.agent")

# Calls in flight at once: while one waits on the server's database, the next batch goes.
SENDERS = 2
# Seconds a start waits for its attempt's end: a short job's start and end go in one call
# (and one transaction); a longer job's start is recorded this much later.
LINGER = 0.02


@dataclass(frozen=True)
class Ended:
    """An end's answer: the job after it, and whether the room it left was refilled."""

    job: JobRecord
    refilled: bool


@dataclass
class _Start:
    body: StartRequest
    refused: Callable[[], None]  # the attempt lost its job: stop it
    at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, int]:
        return self.body.ref.job_id, self.body.ref.attempt


@dataclass
class _End:
    body: CompleteRequest
    room: Capacity | None  # to refill, unless the agent is stopping
    answer: Future[Ended] = field(default_factory=Future)

    @property
    def key(self) -> tuple[str, int]:
        return self.body.ref.job_id, self.body.ref.attempt


class Reporter:
    def __init__(
        self,
        control: ControlPlane,
        claims: ClaimBook,
        adopt: Callable[[list[Claim]], None],
        linger: float = LINGER,
    ) -> None:
        self.control = control
        self.linger = linger
        self.claims = claims
        self.adopt = adopt  # runs the claims a report brought (before their room is freed)
        self.node: str | None = None  # known once the agent has registered
        self._queue: list[_Start | _End] = []
        self._sending: Counter[tuple[str, int]] = Counter()  # attempts with a call in flight
        self._changed = threading.Condition()
        self._closing = False
        self._threads: list[threading.Thread] = []

    def start(self, node: str) -> None:
        self.node = node
        self._threads = [
            threading.Thread(target=self._send_all, name=f"reporter-{n}", daemon=True)
            for n in range(SENDERS)
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Send what is queued, then stop (later reports go one call each)."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join()
        with self._changed:
            self._threads = []

    def started(
        self,
        ref: AttemptRef,
        pid: int | None,
        pid_started_at: float | None,
        git_commit: str | None,
        refused: Callable[[], None],
    ) -> None:
        body = StartRequest(ref=ref, pid=pid, pid_started_at=pid_started_at, git_commit=git_commit)
        self._put(_Start(body, refused))

    def ended(
        self,
        ref: AttemptRef,
        result: AttemptResult,
        room: Capacity | None,
        logs: Sequence[LogChunk] = (),
    ) -> Ended:
        """Report the end (with the attempt's last `logs`) and wait until the server has
        taken (or refused: raised) it."""
        end = _End(CompleteRequest(ref=ref, result=result, logs=list(logs)), room)
        self._put(end)
        return end.answer.result()

    def _put(self, item: _Start | _End) -> None:
        with self._changed:
            if self._threads:
                self._queue.append(item)
                self._changed.notify()
                return
        self._send([item])  # not serving: nothing to batch with

    def _send_all(self) -> None:
        while True:
            with self._changed:
                while not (batch := self._take()):
                    if self._closing and not self._queue:
                        return
                    self._changed.wait(self._ripens())
            try:
                self._send(batch)
            except Exception as exc:  # a bug of ours: no attempt may wait for ever
                log.exception("reporting failed")
                for item in batch:
                    if isinstance(item, _End) and not item.answer.done():
                        item.answer.set_exception(SandrunError(f"reporting failed: {exc}"))
            finally:
                with self._changed:
                    self._sending -= Counter(i.key for i in batch)
                    self._changed.notify_all()

    def _take(self) -> list[_Start | _End]:
        """The oldest queued reports, but none of an attempt that has one in flight (an
        attempt's reports go in order: its end never overtakes its start), nor a start
        still lingering for its end."""
        now = time.monotonic()
        ending = {i.key for i in self._queue if isinstance(i, _End)}
        batch = [
            i
            for i in self._queue
            if i.key not in self._sending
            and (
                isinstance(i, _End) or i.key in ending or now >= i.at + self.linger or self._closing
            )
        ][:MAX_REPORTS]
        taken = {id(i) for i in batch}
        self._queue = [i for i in self._queue if id(i) not in taken]
        self._sending += Counter(i.key for i in batch)
        return batch

    def _ripens(self) -> float | None:
        """Seconds until the first lingering start is due (None: none lingers)."""
        due = [
            i.at + self.linger
            for i in self._queue
            if isinstance(i, _Start) and i.key not in self._sending
        ]
        return max(min(due) - time.monotonic(), 0.0) if due else None

    def _send(self, batch: list[_Start | _End]) -> None:
        starts = [i for i in batch if isinstance(i, _Start)]
        ends = [i for i in batch if isinstance(i, _End)]
        rooms = [e.room for e in ends if e.room is not None]
        room = rooms[0] if rooms else None
        for more in rooms[1:]:
            assert room is not None
            room = room.plus(more)
        assert self.node is not None
        try:
            with self.claims.call():
                reply = self.control.report(
                    self.node,
                    [s.body for s in starts],
                    [e.body for e in ends],
                    room,
                    len(rooms),
                    uuid.uuid4().hex if rooms else None,  # the same on every retry
                )
                for claim in reply.claims:
                    self.claims.received(claim)
        except SandrunError as exc:  # the server stayed away past every retry
            log.error("could not report %d start(s) and %d end(s): %s", len(starts), len(ends), exc)
            for e in ends:
                e.answer.set_exception(exc)
            return
        self.adopt(reply.claims)  # counted as running before the ends' room is given back
        refilled = len(reply.claims) >= len(rooms)
        for s, outcome in zip(starts, reply.starts, strict=True):
            if outcome.error is not None:
                log.warning(
                    "start refused (%s): stopping the attempt",
                    outcome.error.message,
                    extra={"job": s.body.ref.job_id, "attempt": s.body.ref.attempt},
                )
                s.refused()
        for e, answer in zip(ends, reply.ends, strict=True):
            if answer.error is not None:
                error = answer.error
                e.answer.set_exception(
                    rebuilt(error.code, error.message, error.field, error.suggestions)
                )
            else:
                assert answer.job is not None
                e.answer.set_result(Ended(answer.job, refilled))
