"""Interactive sessions: a job that keeps a Python interpreter alive, and runs cells sent
to it with their state kept between them, as a notebook kernel does (docs/lifecycle.md).

`client.session(cpus=2, gpu="a100")` (or `client.job()....interactive()`) submits the job;
`session.execute("x = 41")` then `session.execute("x + 1").value == "42"`. Each cell is an
exec into the job (`sandrun.kernel --cell`), so it has the job's sandbox, resources and
billing, and is an event on it. The session ends on `close()`, after `idle` seconds
without a cell, or when the job is cancelled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sandrun.client.job import Job
from sandrun.errors import IllegalTransition, SandrunError
from sandrun.errors.lifecycle import ExecUnavailable
from sandrun.spec.units import parse_duration

KERNEL = 'exec "$SANDRUN_PYTHON" -m sandrun.kernel'
DEFAULT_IDLE = 600.0  # seconds a session waits for a cell before it ends
START_WAIT = 600.0  # seconds `execute` waits for the session's job to start


def kernel_shell(idle: float | str = DEFAULT_IDLE) -> str:
    """The session job's `shell`: its kernel, ending after `idle` without a cell."""
    seconds = parse_duration(idle) if isinstance(idle, str) else float(idle)
    return f"{KERNEL} --idle {seconds:g}"


@dataclass(frozen=True)
class Cell:
    """What a cell did: its printed output, the repr of its last expression (None if it
    had none, or it was None), and the exception it raised, if it did."""

    stdout: str
    stderr: str
    value: str | None
    error: str | None  # the traceback
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Session:
    def __init__(self, job: Job) -> None:
        self.job = job
        self._started = False  # once it ran, a cell needs no look at the job first

    def __repr__(self) -> str:
        return f"<Session {self.job.id} {self.job.status}>"

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, code: str) -> Cell:
        """Run `code` as the next cell (waiting for the session to start, the first time)."""
        if not self._started:
            self.job.wait_until_running(START_WAIT)
            self._started = True
        done = self.job.exec(["sh", "-c", f"{KERNEL} --cell"], stdin=code.encode())
        if done.exit_code != 0:
            said = done.stderr.decode(errors="replace").strip()
            ended = self.job.refresh().is_terminal
            raise (IllegalTransition if ended else ExecUnavailable)(
                f"session {self.job.id}: the cell did not run ({said or done.exit_code})"
            )
        reply = json.loads(done.stdout)
        error = reply.get("error")
        return Cell(
            stdout=reply["stdout"],
            stderr=reply["stderr"],
            value=reply["value"],
            error=error["traceback"] if error else None,
            error_type=error["type"] if error else None,
        )

    def close(self, timeout: float = 60.0) -> Job:
        """End the session (its job completes); a session already ended is left as it is."""
        if not self.job.refresh().is_terminal:
            try:
                self.job.exec(["sh", "-c", f"{KERNEL} --close"])
            except SandrunError:
                pass  # it ended meanwhile, or cannot be reached: cancel it
            if not self.job.wait(timeout).is_terminal:
                self.job.cancel()
        return self.job
