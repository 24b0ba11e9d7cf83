"""Buffers an attempt's output and ships it to the control plane in ordered chunks.

Reads are coalesced: consecutive pieces of one stream become one chunk (up to 1 MiB),
flushed at most every `interval` seconds, so a chatty job costs few store writes. Past
`limit` bytes in all, output is dropped after one marker line on stderr.

While the server is away the chunks are kept (the limit bounds them) and sent again with
backoff: an outage never stops the job. A chunk once offered is never grown (the server
may have stored it though its reply was lost, and it stores a seq once). At the end,
what is left (`rest`, up to 256 KiB) goes with the attempt's end and is stored in its
transaction; more is drained first, tried as long as the result itself would be.
"""

from __future__ import annotations

import hashlib
import logging
import time

from sandrun.agent.control import ControlPlane
from sandrun.errors import SandrunError, StaleAttempt
from sandrun.ids import now
from sandrun.models import Claim, LogChunk, Stream

log = logging.getLogger("sandrun.agent")

MAX_CHUNK = 1 << 20
END_LOGS = 256 << 10  # bytes of last output that may go with the attempt's end
DRAIN_PATIENCE = 600.0  # seconds the last logs are retried at the end, as a result is
_FIRST_BACKOFF = 0.25  # seconds before the first retry after a failed send
_MAX_BACKOFF = 5.0


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
        # Whether the last pending chunk may grow: not once it was offered to the server,
        # which may have stored it though the reply was lost (a seq is stored once).
        self._open = False
        self._seq = 0
        self._last_flush = time.monotonic()
        self._retry_at = 0.0  # while the server is away: not before this
        self._backoff = _FIRST_BACKOFF
        self.total_bytes = 0
        self._stdout = hashlib.sha256()  # of all stdout kept (replicas may compare it)

    def stdout_sha256(self) -> str:
        return self._stdout.hexdigest()

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
        if stream == "stdout":
            self._stdout.update(data)
        self.total_bytes += len(data)
        last = self._pending[-1] if self._pending else None
        grows = last is not None and last.stream == stream and self._open
        if last is not None and grows and len(last.data) + len(data) <= MAX_CHUNK:
            self._pending[-1] = last.model_copy(update={"data": last.data + data})
        else:
            self._open = True
            self._seq += 1
            self._pending.append(
                LogChunk(
                    attempt=self._claim.attempt, seq=self._seq, stream=stream, data=data, at=now()
                )
            )
        self._pending_bytes += len(data)

    def maybe_flush(self) -> None:
        at = time.monotonic()
        due = at - self._last_flush >= self._interval
        if self._pending and (due or self._pending_bytes >= 4 * MAX_CHUNK) and at >= self._retry_at:
            self.flush()

    def flush(self) -> bool:
        """Send what is buffered; False if the server could not take it (kept, to send
        again). Raises StaleAttempt if the attempt lost its job."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return True
        chunks, size = self._pending, self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        self._open = False
        try:
            self._control.append_logs(self._claim.ref, chunks)
        except StaleAttempt:
            raise
        except SandrunError as exc:
            if exc.http_status < 500:  # refused for good, not unavailable: no use retrying
                log.error("logs refused by the server: %s", exc, extra=self._fields())
                return True
            self._pending, self._pending_bytes = chunks + self._pending, size + self._pending_bytes
            if self._backoff == _FIRST_BACKOFF:  # once per outage
                log.warning("logs kept until the server is back: %s", exc, extra=self._fields())
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
            return False
        self._backoff = _FIRST_BACKOFF
        return True

    def drain(self, patience: float = DRAIN_PATIENCE) -> None:
        """Send everything left, trying for `patience` seconds; past that the logs are
        dropped (said in the agent's log): the result matters more."""
        deadline = time.monotonic() + patience
        while not self.flush():
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("dropped %d bytes of logs", self._pending_bytes, extra=self._fields())
                self._pending, self._pending_bytes = [], 0
                return
            time.sleep(min(max(self._retry_at - time.monotonic(), 0.0), left))

    def rest(self, most: int = END_LOGS) -> list[LogChunk]:
        """What is left to send, to go with the attempt's end (one call, one transaction),
        if it is at most `most` bytes; else it is drained now and nothing is left."""
        if self._pending_bytes > most:
            self.drain()
        chunks, self._pending, self._pending_bytes = self._pending, [], 0
        return chunks

    def _fields(self) -> dict[str, object]:
        return {"job": self._claim.job.id, "attempt": self._claim.attempt}
