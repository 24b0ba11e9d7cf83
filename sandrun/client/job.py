"""The Job handle: one submitted job, as the SDK user sees it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sandrun.client.calls import failure, result_of
from sandrun.errors import ArtifactError, TimeoutError
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

    def wait(self, timeout: float | None = None, *, check: bool = False) -> Job:
        """Block until the job ends (any terminal state); raise TimeoutError after
        `timeout` seconds. With `check`, a job that did not complete raises
        JobFailedError (with its exit code and the last lines of its log)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 30.0 if deadline is None else deadline - time.monotonic()
            self.record = self._client.transport.wait(self.id, max(left, 0.0))
            if self.record.is_terminal:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {self.id} is still {self.record.state} after {timeout}s",
                    field="timeout",
                )
        if check and self.record.state is not JobState.COMPLETED:
            raise failure(self)
        return self

    def result(self, timeout: float | None = None) -> Any:
        """What a function job returned; what it raised is raised here."""
        return result_of(self.wait(timeout))

    def chunks(self, follow: bool = False, attempt: int | None = None) -> Iterator[LogChunk]:
        """Log chunks (bytes, with stream and attempt) in order; with `follow`, until the
        job has ended."""
        return self._client.logs(self.id, follow=follow, attempt=attempt)

    def logs(
        self, follow: bool = False, tail: int | None = None, attempt: int | None = None
    ) -> Iterator[str]:
        """Log lines (stdout and stderr as they interleaved), without their newlines.
        `tail`: only the last N lines so far; with `follow`, then keep yielding until
        the job has ended."""
        if tail is None:
            yield from lines_of(self.chunks(follow, attempt))
            return
        so_far = list(self.chunks(False, attempt))
        yield from list(lines_of(iter(so_far)))[-tail:] if tail > 0 else []
        if follow:
            seen = (so_far[-1].attempt, so_far[-1].seq) if so_far else (0, 0)
            fresh = (c for c in self.chunks(True, attempt) if (c.attempt, c.seq) > seen)
            yield from lines_of(fresh)

    def log_text(self, stream: str | None = None) -> str:
        """All output so far as text (both streams, or just "stdout" / "stderr")."""
        return b"".join(
            c.data for c in self.chunks() if stream is None or c.stream == stream
        ).decode(errors="replace")

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
        """Write every output under `dest`, keeping relative paths; return the files written.

        Whatever the server sends, nothing is written outside `dest`: a path that would
        leave it (absolute, '..', through a symlink) refuses the whole download first."""
        outputs = self.outputs
        targets = [inside(Path(dest), out.path) for out in outputs]
        for out, target in zip(outputs, targets, strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_bytes(out.path))
        return targets


def inside(dest: Path, path: str) -> Path:
    """`dest / path`, if that stays inside `dest` once symlinks are resolved."""
    root = dest.resolve()
    target = (root / path).resolve()
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not target.is_relative_to(root):
        raise ArtifactError(
            f"output path {path!r} would be written outside {str(dest)!r}; refusing the download",
            field="path",
            suggestions=["the server (or an agent) sent a path that is not safe; report it"],
        )
    if target == root:
        raise ArtifactError(f"output path {path!r} names no file", field="path")
    return target


def lines_of(chunks: Iterator[LogChunk]) -> Iterator[str]:
    """Whole lines from chunks; a line split across chunks of one stream is joined."""
    partial: dict[str, bytes] = {}
    for chunk in chunks:
        data = partial.pop(chunk.stream, b"") + chunk.data
        *whole, rest = data.split(b"\n")
        for line in whole:
            yield line.decode(errors="replace")
        if rest:
            partial[chunk.stream] = rest
    for rest in partial.values():
        yield rest.decode(errors="replace")
