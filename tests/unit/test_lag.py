"""How far behind the server is: what the lease reaper forgives."""

from __future__ import annotations

import asyncio
import time
from unittest.mock import MagicMock

from sandrun.server.beats import Heartbeats, Lag


def test_a_blocked_event_loop_counts_as_lag_for_a_lease() -> None:
    async def test() -> tuple[float, float, float]:
        beats = Heartbeats(MagicMock())
        lag = Lag(beats, window=0.6)
        watching = asyncio.create_task(lag.watch())
        await asyncio.sleep(0.3)
        quiet = lag.worst()
        time.sleep(0.4)  # the loop is stuck: every request (a heartbeat too) waits
        await asyncio.sleep(0.2)
        stuck = lag.worst()
        await asyncio.sleep(0.8)  # past the window: forgotten
        later = lag.worst()
        watching.cancel()
        beats.close()
        return quiet, stuck, later

    quiet, stuck, later = asyncio.run(test())
    assert quiet < 0.2
    assert stuck >= 0.3
    assert later < 0.2
