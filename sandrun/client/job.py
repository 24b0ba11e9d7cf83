"""The Job handle: one submitted job, as the SDK user sees it — its state, logs and
outputs, and for a function call what it returned (unpickled here, on the client: never
on the server)."""

from __future__ import annotations

import contextlib
import json
import pickle
import time
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sandrun.client import terminal
from sandrun.client.calls import LOG_TAIL_LINES, RESULT_OUTPUTS
from sandrun.client.execs import ExecStream, collect
from sandrun.errors import (
    ArtifactError,
    ArtifactNotFound,
    IllegalTransition,
    JobFailedError,
    PythonVersionMismatch,
    RemoteFunctionError,
    TimeoutError,
)
from sandrun.exec_models import ExecRequest, ExecResult
from sandrun.models import Attempt, Checkpoint, Event, JobRecord, LogChunk, OutputFile
from sandrun.states import JobState

if TYPE_CHECKING:
    from sandrun.client.transport import Transport

# bash where the job's view has it, else sh.
LOGIN_SHELL = ("sh", "-c", "if command -v bash >/dev/null; then exec bash; else exec sh; fi")


def log_chunks(
    transport: Transport, job_id: str, follow: bool, attempt: int | None
) -> Iterator[LogChunk]:
    """A job's log chunks in order; with `follow`, until the job has ended."""
    if follow:
        return transport.follow_logs(job_id, attempt=attempt)
    return iter(transport.logs(job_id, attempt=attempt))


class Job:
    def __init__(self, transport: Transport, record: JobRecord) -> None:
        self._transport = transport
        self.record = record

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.record.name} {self.record.state}>"

    @property
    def id(self) -> str:
        return self.record.id

    def refresh(self) -> Job:
        self.record = self._transport.get(self.id)
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
    def cost(self) -> float | None:
        """USD the job paid (None until it ends, or where jobs are not priced)."""
        return self.refresh().record.cost

    @property
    def consensus(self) -> Any:
        """The agreement its replicas came to: k, n, agreeing and dissenting nodes, the
        digests seen, and who was paid (None for a job without `consensus`)."""
        return self.refresh().record.consensus

    @property
    def attempts(self) -> list[Attempt]:
        return self._transport.attempts(self.id)

    @property
    def events(self) -> list[Event]:
        return self._transport.events(self.id)

    def wait(self, timeout: float | None = None, *, check: bool = False) -> Job:
        """Block until the job ends (any terminal state); raise TimeoutError after
        `timeout` seconds. With `check`, a job that did not complete raises
        JobFailedError (with its exit code and the last lines of its log)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 30.0 if deadline is None else deadline - time.monotonic()
            self.record = self._transport.wait(self.id, max(left, 0.0))
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

    def wait_until_running(self, timeout: float = 600.0) -> Job:
        """Until the job runs; IllegalTransition if it ends first, TimeoutError if it has
        not started within `timeout` seconds."""
        deadline, poll = time.monotonic() + timeout, 0.05
        while not self.refresh().is_running:
            if self.is_terminal:
                raise IllegalTransition(f"job {self.id} is {self.status}: it is not running")
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} did not start within {timeout:g} s")
            time.sleep(poll)
            poll = min(poll * 1.5, 1.0)
        return self

    def result(self, timeout: float | None = None) -> Any:
        """What a function job returned; what it raised is raised here."""
        return result_of(self.wait(timeout))

    def chunks(self, follow: bool = False, attempt: int | None = None) -> Iterator[LogChunk]:
        """Log chunks (bytes, with stream and attempt) in order; with `follow`, until the
        job has ended."""
        return log_chunks(self._transport, self.id, follow, attempt)

    def logs(
        self, follow: bool = False, tail: int | None = None, attempt: int | None = None
    ) -> Iterator[str]:
        """Log lines (stdout and stderr as they interleaved), without their newlines; bytes
        that are not UTF-8 read as U+FFFD (`chunks` and `log_bytes` give the bytes).
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

    def log_bytes(self, stream: str | None = None) -> bytes:
        """All output so far, exactly as the job wrote it (both streams, or just "stdout"
        / "stderr")."""
        return b"".join(c.data for c in self.chunks() if stream is None or c.stream == stream)

    def log_text(self, stream: str | None = None) -> str:
        """All output so far as text (both streams, or just "stdout" / "stderr"). Bytes
        that are not UTF-8 read as U+FFFD; `log_bytes` has them as written."""
        return self.log_bytes(stream).decode(errors="replace")

    def cancel(self) -> Job:
        self.record = self._transport.cancel(self.id)
        return self

    def pause(self) -> Job:
        """Freeze the running job in place: its processes stop (its agent freezes them
        within a heartbeat; the `frozen` event says when), it keeps its slot, and its
        timeout stops counting until `resume()`."""
        self.record = self._transport.pause(self.id)
        return self

    def resume(self) -> Job:
        self.record = self._transport.resume(self.id)
        return self

    def checkpoint(self) -> Job:
        """Ask the running job to checkpoint now: it gets its `checkpoint.signal`, saves
        into $SANDRUN_CHECKPOINT_DIR and exits 85, and its next attempt starts from it."""
        self.record = self._transport.checkpoint(self.id)
        return self

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints it keeps, oldest first (attempt 0: one it was started from)."""
        return self._transport.checkpoints(self.id)

    def exec(self, command: str | Sequence[str], stdin: bytes | str | None = None) -> ExecResult:
        """Run `command` inside the running job — its sandbox, cgroup, uid, environment
        and working directory — and return its exit code and output. A string runs in
        `sh -c`; a list runs as it is. Its owner or an admin only; each is an event."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return collect(self.open_exec(argv), data)

    def open_exec(
        self, argv: Sequence[str], tty: bool = False, rows: int = 24, cols: int = 80
    ) -> ExecStream:
        """Start `argv` inside the running job and hand back its stream, to feed, signal,
        resize (with `tty`, a pseudo-terminal) and read to its end."""
        request = ExecRequest(argv=list(argv), tty=tty, rows=rows, cols=cols)
        return self._transport.exec(self.id, request)

    def shell(self, command: Sequence[str] = LOGIN_SHELL) -> int:
        """An interactive terminal inside the running job, on this process's own; its
        exit status once it ends (`sandrun shell`)."""
        rows, cols = terminal.size()
        return terminal.interact(self.open_exec(command, True, rows, cols), terminal=True)

    ssh = shell  # the seed API's name for it

    @property
    def outputs(self) -> list[OutputFile]:
        return self._transport.outputs(self.id)

    def read_bytes(self, path: str) -> bytes:
        return self._transport.read_output(self.id, path)

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


def result_of(job: Job) -> Any:
    """The value a function job returned, or raise what it raised (or why it failed)."""
    if job.record.state is JobState.COMPLETED and job.record.exit_code == 0:
        # The runner exits 0 only once it wrote {"ok": true} and the value: one download.
        with contextlib.suppress(ArtifactNotFound):
            return pickle.loads(job.read_bytes(RESULT_OUTPUTS[1]))
    try:
        report = json.loads(job.read_bytes(RESULT_OUTPUTS[0]))
    except ArtifactNotFound:
        raise failure(job) from None
    if report.get("ok"):
        return pickle.loads(job.read_bytes(RESULT_OUTPUTS[1]))
    remote_tb = str(report.get("traceback", ""))
    if report.get("kind") == "python_version":
        raise PythonVersionMismatch(
            str(report["message"]),
            suggestions=["run the client and the agents on the same Python minor version"],
        )
    raised: BaseException | None = None
    if report.get("kind") == "raised":
        try:
            raised = pickle.loads(job.read_bytes(RESULT_OUTPUTS[1]))
        except Exception:  # not importable here: fall back to its text
            raised = None
    if isinstance(raised, SystemExit | KeyboardInterrupt | GeneratorExit):
        # Raised here they would end the caller's own process, silently.
        raise RemoteFunctionError(
            f"the function raised {type(raised).__name__}"
            + (f" (exit code {raised.code})" if isinstance(raised, SystemExit) else ""),
            remote_type=str(report.get("type", "")),
            remote_traceback=remote_tb,
            exit_code=raised.code if isinstance(raised, SystemExit) else None,
        )
    if isinstance(raised, BaseException):
        raised.add_note(f"--- remote traceback (job {job.id}) ---\n{remote_tb.rstrip()}")
        raise raised
    raise RemoteFunctionError(
        f"{report.get('type')}: {report.get('message')}",
        remote_type=str(report.get("type", "")),
        remote_traceback=remote_tb,
    )


def failure(job: Job) -> JobFailedError:
    """Why a job did not complete, with the last lines of its log."""
    record = job.record
    lines = job.log_text().splitlines()[-LOG_TAIL_LINES:]
    why = record.message or (record.failure_reason.value if record.failure_reason else "")
    if record.state is JobState.COMPLETED:
        why = "it returned no result"
    return JobFailedError(
        f"job {job.id} ended {record.state.value}"
        + (f" with exit code {record.exit_code}" if record.exit_code is not None else "")
        + (f": {why}" if why else ""),
        job_id=job.id,
        state=record.state.value,
        exit_code=record.exit_code,
        log_tail="\n".join(lines),
    )
