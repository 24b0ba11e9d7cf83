"""Which claims this agent received, so that it can tell a claim whose reply was lost.

The server commits a claim, then replies. A reply lost on the way (a server killed
between the two, a dropped connection) leaves an attempt the server says this node holds
and the agent never heard of; left alone it would wait out its lease and be retried as
`node_lost`. The heartbeat's reply names such attempts (`unheld`). One is given back once
no claim call that was already in flight when it was first named is still in flight, and
none of them delivered it: a call that starts later cannot deliver a claim committed
before it began.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sandrun.agent.control import ControlPlane
from sandrun.errors import SandrunError
from sandrun.models import AttemptKey, Claim

log = logging.getLogger("sandrun.agent")

KEEP = 10_000  # received claims remembered: far more than a node holds at once


class ClaimBook:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._received: dict[tuple[str, int], None] = {}  # insertion-ordered: oldest first
        self._calls: dict[int, float] = {}  # claim calls in flight, by when each began
        self._named: dict[tuple[str, int], float] = {}  # unheld attempts, first named when
        self._ids = itertools.count()

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around a call that may return a claim; `received` must be told inside it."""
        number = next(self._ids)
        with self._lock:
            self._calls[number] = self._clock()
        try:
            yield
        finally:
            with self._lock:
                del self._calls[number]

    def received(self, claim: Claim | None) -> None:
        if claim is None:
            return
        with self._lock:
            self._received[(claim.job.id, claim.attempt)] = None
            if len(self._received) > KEEP:
                del self._received[next(iter(self._received))]

    def never_received(self, unheld: list[AttemptKey]) -> list[AttemptKey]:
        """Of the attempts the server says this node holds unstarted (and the heartbeat did
        not list), those no claim call can still deliver: safe to give back."""
        now = self._clock()
        with self._lock:
            oldest_call = min(self._calls.values(), default=math.inf)
            named = [k for k in unheld if k.key not in self._received]
            self._named = {k.key: self._named.get(k.key, now) for k in named}
            return [k for k in named if self._named[k.key] < oldest_call]


def give_back_unreceived(
    control: ControlPlane, claims: ClaimBook, node: str, unheld: list[AttemptKey]
) -> None:
    """Claims the server committed whose replies never arrived: back to the queue at
    once, with no retry counted, rather than after a lease as node_lost."""
    lost = claims.never_received(unheld)
    if not lost:
        return
    try:
        given = control.hand_back(node, lost, "not_received")
    except SandrunError as exc:
        log.warning("could not give back unreceived claims: %s", exc)
        return
    for k in given:
        log.warning(
            "gave back an attempt whose claim never arrived",
            extra={"job": k.job_id, "attempt": k.attempt},
        )
