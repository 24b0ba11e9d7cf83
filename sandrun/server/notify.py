"""Wake-ups for long-polls and log followers inside the server's event loop.

The service calls listeners from worker threads; `bump_threadsafe` hands the news to the
loop. A waiter remembers the generation it saw before looking at the store, so a change
that lands between its look and its wait is never missed.
"""

from __future__ import annotations

import asyncio
import contextlib


class OnLoop:
    """News from worker threads, handed to the event loop: `bump` runs on the loop."""

    def __init__(self) -> None:
        self.generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def bump_threadsafe(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.bump)

    def bump(self) -> None:
        self.generation += 1


class Notifier(OnLoop):
    """Wakes every waiter at once (log followers: each wants every change)."""

    def __init__(self) -> None:
        super().__init__()
        self._event = asyncio.Event()

    def bump(self) -> None:
        super().bump()
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, seen: int, timeout: float) -> None:
        """Return when the generation moves past `seen`, or after `timeout` seconds."""
        if self.generation != seen or timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
