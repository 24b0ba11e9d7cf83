"""An exec into a running job on the wire (docs/lifecycle.md, "Exec and shell").

A client opens a WebSocket, `/v1/jobs/{id}/exec`, and sends an `ExecRequest` as its first
(text) message. Then both ways: binary frames are a stream's bytes after one byte naming
the stream (`STDIN`, `STDOUT`, `STDERR`, as Kubernetes' channel protocol does); text frames
are JSON control messages (`ExecControl`), ending with `{"exit": N}` or `{"error": ...}`
from the far side. The agent's end of it speaks the same frames.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandrun.models import ErrorBody

STDIN, STDOUT, STDERR = 0, 1, 2
MAX_ARGV = 256
MAX_ARG = 32 * 1024


class ExecRequest(BaseModel):
    """What to run inside the job: `argv` (no shell unless it names one), with a
    pseudo-terminal of `rows` x `cols` if `tty`."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1, max_length=MAX_ARGV)
    tty: bool = False
    rows: int = Field(default=24, ge=1, le=1000)
    cols: int = Field(default=80, ge=1, le=1000)
    term: str = Field(default="xterm-256color", max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")

    @field_validator("argv")
    @classmethod
    def _plain(cls, argv: list[str]) -> list[str]:
        for i, arg in enumerate(argv):
            if "\x00" in arg:
                raise ValueError(f"argv[{i}] holds a NUL byte")
            if len(arg) > MAX_ARG:
                raise ValueError(f"argv[{i}] is longer than {MAX_ARG} characters")
        if not argv[0]:
            raise ValueError("argv[0] is empty: name the program to run")
        return argv


class ExecControl(BaseModel):
    """A control message; each names one thing. `eof`: no more stdin; `resize`: the
    terminal's new [rows, cols]; `signal`: a signal's name for the command (INT, TERM...);
    `exit`: the command's exit code (128 + N if signal N ended it); `error`: why it could
    not run."""

    model_config = ConfigDict(extra="ignore")

    eof: bool | None = None
    resize: tuple[int, int] | None = None
    signal: str | None = Field(default=None, max_length=16)
    exit: int | None = None
    error: ErrorBody | None = None


class ExecAsk(BaseModel):
    """Sent down an agent's channel: connect to `/v1/agent/exec/{session}` and run the
    request inside attempt `attempt` of `job_id`."""

    session: str
    job_id: str
    attempt: int
    request: ExecRequest


class ExecResult(BaseModel):
    """What `job.exec(...)` returns: the command's exit code and its output."""

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0
