"""The Job handle: one submitted job, as the SDK user sees it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sandrun.errors import TimeoutError
from sandrun.models import Attempt, Event, JobRecord, LogChunk, OutputFile
from sandrun.states import JobState

if TYPE_CHECKING:
    from sandrun.client.client import Client


class Job:
    def __init__(self, client: Client, record: JobRecord) -> None:
        self._client = client
        self.record = record

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.record.name} {self.record.state}>"

    @property
    def id(self) -> str:
        return self.record.id

    def refresh(self) -> Job:
        self.record = self._client.transport.get(self.id)
        return self

    @property
    def status(self) -> JobState:
        return self.refresh().record.state

    @property
    def exit_code(self) -> int | None:
        return self.refresh().record.exit_code

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def is_running(self) -> bool:
        return self.status is JobState.RUNNING

    @property
    def attempts(self) -> list[Attempt]:
        return self._client.transport.attempts(self.id)

    @property
    def events(self) -> list[Event]:
        return self._client.transport.events(self.id)

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job ends (any terminal state); raise TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 30.0 if deadline is None else deadline - time.monotonic()
            self.record = self._client.transport.wait(self.id, max(left, 0.0))
            if self.record.is_terminal:
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {self.id} is still {self.record.state} after {timeout}s",
                    field="timeout",
                )

    def logs(self, follow: bool = False, attempt: int | None = None) -> Iterator[LogChunk]:
        """Log chunks in order; with `follow`, keep yielding until the job has ended."""
        return self._client.logs(self.id, follow=follow, attempt=attempt)

    def log_text(self, stream: str | None = None) -> str:
        """All output so far as text (both streams, or just "stdout" / "stderr")."""
        return b"".join(c.data for c in self.logs() if stream is None or c.stream == stream).decode(
            errors="replace"
        )

    def cancel(self) -> Job:
        self.record = self._client.transport.cancel(self.id)
        return self

    @property
    def outputs(self) -> list[OutputFile]:
        return self._client.transport.outputs(self.id)

    def read_bytes(self, path: str) -> bytes:
        return self._client.transport.read_output(self.id, path)

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode()

    def download(self, dest: str | Path) -> list[Path]:
        """Write every output under `dest`, keeping relative paths; return the files written."""
        written = []
        for out in self.outputs:
            target = Path(dest) / out.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_bytes(out.path))
            written.append(target)
        return written
