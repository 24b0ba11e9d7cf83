"""Long-polls for work, woken one at a time.

A change that may make work claimable (a submit, an end, a loss, a retry's backoff
running out) moves the generation and wakes one waiting poll, the longest waiting. A poll
that claims a job wakes one more, since there may be more. A poll that finds nothing marks
its shape (free capacity, node labels and operator) as having missed this generation and wakes the
longest-waiting poll of another shape, so a job that fits only some nodes reaches one of
them without every idle poll querying the store. Polls not woken sleep on; when their wait
ends their agents poll again, and that first look sees the new work.

An idle agent polls again and again: a node that found nothing, of the same shape, at the
same generation, skips the store (`worth_asking`) for up to `recheck` seconds, after which
it looks once more for what time alone changes (a reservation's holder gone silent, a job
waited long enough to be reserved for).

Waking every poll on every change (what this replaces) cost one query per idle agent per
change: with a thousand idle agents, heartbeats queued behind those queries for longer
than a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable

from sandrun.server.notify import OnLoop

Shape = tuple[str, str, str]  # (free capacity, node labels) as canonical JSON, and operator


class WorkBoard(OnLoop):
    def __init__(self, recheck: float) -> None:
        super().__init__()
        self.recheck = recheck
        self._empty: dict[str, tuple[int, Shape, float]] = {}  # node -> its last miss
        self._waiters: dict[int, tuple[Shape, asyncio.Future[None]]] = {}  # oldest first
        self._keys = itertools.count()
        self._missed: set[Shape] = set()  # shapes that found nothing at this generation
        self._timed_for = -1  # the generation whose next eligible instant has a timer
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def bump(self) -> None:
        """Something may have become claimable: a new generation, one poll woken."""
        super().bump()
        self._missed.clear()
        self.pass_on()

    def worth_asking(self, node: str, shape: Shape) -> bool:
        """Whether the store may have something new for `node`: not when it found nothing
        with this shape at this generation, less than `recheck` seconds ago."""
        miss = self._empty.get(node)
        return (
            miss is None
            or miss[:2] != (self.generation, shape)
            or (time.monotonic() - miss[2] >= self.recheck)
        )

    def took(self, node: str) -> None:
        """A poll claimed a job: there may be more, so wake another."""
        self._empty.pop(node, None)
        self.pass_on()

    def found_nothing(self, node: str, shape: Shape, generation: int) -> None:
        """A poll of `shape` found nothing at `generation`: wake one of another shape."""
        if len(self._empty) >= 1_000_000:  # one entry per polling node: a bound, not a cap
            self._empty.clear()
        self._empty[node] = (generation, shape, time.monotonic())
        if generation == self.generation:
            self._missed.add(shape)
            self.pass_on()

    def pass_on(self) -> None:
        """Wake the longest-waiting poll whose shape has not missed this generation (a poll
        woken that cannot look, its agent gone say, hands its wake-up on with this)."""
        for key, (shape, waiter) in self._waiters.items():
            if shape not in self._missed:
                del self._waiters[key]
                if not waiter.done():
                    waiter.set_result(None)
                return

    async def wait(self, seen: int, timeout: float, shape: Shape) -> bool:
        """Sleep until woken (True) or `timeout` seconds pass (False); at once (True) if
        the generation already moved past `seen`."""
        if self.generation != seen:
            return True
        if timeout <= 0:
            return False
        waiter = asyncio.get_running_loop().create_future()
        key = next(self._keys)
        self._waiters[key] = (shape, waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(key, None)

    async def time_next(self, next_eligible: Callable[[], Awaitable[float | None]]) -> None:
        """Make sure the generation moves when the earliest job held back (a retry's
        backoff) becomes claimable: one look at the store per generation, whoever asks."""
        if self._timed_for == self.generation:
            return
        self._timed_for = self.generation
        at = await next_eligible()  # wall-clock seconds
        if at is None or at <= time.time() or at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        delay = max(0.0, at - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        self.bump()

    def waiting(self) -> int:
        return len(self._waiters)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for _, waiter in self._waiters.values():
            with contextlib.suppress(asyncio.InvalidStateError):
                waiter.cancel()
