"""Buffers an attempt's output and ships it to the control plane in ordered chunks.

Reads are coalesced: consecutive pieces of one stream become one chunk (up to 1 MiB),
flushed at most every `interval` seconds, so a chatty job costs few store writes. Past
`limit` bytes in all, output is dropped after one marker line on stderr.
"""

from __future__ import annotations

import time

from sandrun.agent.control import ControlPlane
from sandrun.ids import now
from sandrun.models import Claim, LogChunk, Stream

MAX_CHUNK = 1 << 20


class LogSink:
    def __init__(
        self,
        control: ControlPlane,
        claim: Claim,
        interval: float = 0.05,
        limit: int | None = None,
    ) -> None:
        self._control = control
        self._limit = limit
        self.capped = False
        self._claim = claim
        self._interval = interval
        self._pending: list[LogChunk] = []
        self._pending_bytes = 0
        self._seq = 0
        self._last_flush = time.monotonic()
        self.total_bytes = 0

    def add(self, stream: Stream, data: bytes) -> None:
        if self.capped:
            return
        if self._limit is not None and self.total_bytes + len(data) > self._limit:
            self._append(stream, data[: self._limit - self.total_bytes])
            self.capped = True
            marker = (
                f"\n[sandrun: the log reached its limit of {self._limit >> 20} MiB "
                "(limits.log_size); further output is dropped]\n"
            )
            self._append("stderr", marker.encode())
            return
        self._append(stream, data)

    def _append(self, stream: Stream, data: bytes) -> None:
        if not data:
            return
        self.total_bytes += len(data)
        last = self._pending[-1] if self._pending else None
        if last is not None and last.stream == stream and len(last.data) + len(data) <= MAX_CHUNK:
            self._pending[-1] = last.model_copy(update={"data": last.data + data})
        else:
            self._seq += 1
            self._pending.append(
                LogChunk(
                    attempt=self._claim.attempt, seq=self._seq, stream=stream, data=data, at=now()
                )
            )
        self._pending_bytes += len(data)

    def maybe_flush(self) -> None:
        due = time.monotonic() - self._last_flush >= self._interval
        if self._pending and (due or self._pending_bytes >= 4 * MAX_CHUNK):
            self.flush()

    def flush(self) -> None:
        """Send what is buffered. Raises StaleAttempt if the attempt lost its job."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        chunks, self._pending, self._pending_bytes = self._pending, [], 0
        self._control.append_logs(self._claim.ref, chunks)
