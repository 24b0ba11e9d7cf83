from __future__ import annotations

import uuid

from sandrun.agent.wake import Waker, notify


def test_wakeups_never_block_when_the_agent_is_not_listening() -> None:
    waker = Waker(f"\0sandrun-test-{uuid.uuid4().hex}")
    try:
        for _ in range(10_000):  # far past the socket's queue: must not hang
            waker.wake("finished")
        assert waker.wait(0) == {"finished"}
        assert waker.wait(0) == set()
    finally:
        waker.close()


def test_a_wakeup_with_nobody_listening_is_silent() -> None:
    notify(f"\0sandrun-test-{uuid.uuid4().hex}", "submitted")
