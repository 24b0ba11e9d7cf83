"""The uids a root agent runs attempts as: one of its own for each running attempt."""

from __future__ import annotations

import threading

JOB_UID_BASE = 2_000_000_000  # root agents run each attempt as its own uid from here


class UidPool:
    """Distinct unprivileged uids for the attempts running at once on a root agent; or,
    `shared`, one uid for all (the user who started an embedded agent through sudo)."""

    def __init__(
        self, base: int = JOB_UID_BASE, size: int = 4096, shared: int | None = None
    ) -> None:
        self.shared = shared
        self._free = [] if shared is not None else list(range(base + size - 1, base - 1, -1))
        self._lock = threading.Lock()

    def acquire(self) -> int:
        if self.shared is not None:
            return self.shared
        with self._lock:
            return self._free.pop()

    def release(self, uid: int) -> None:
        if self.shared is not None:
            return
        with self._lock:
            self._free.append(uid)
