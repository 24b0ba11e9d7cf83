"""A command running inside a job, as the client drives it: `job.exec`, `sandrun exec`,
`sandrun shell` (docs/lifecycle.md).

Through a server it is a WebSocket (server/execs.py); embedded, the client enters the
job's sandbox itself, from what the local agent wrote of the attempt (the user and the
node are one). Either way it is an `ExecStream`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError as PydanticError
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from sandrun.error_codes import rebuilt
from sandrun.errors import SandrunError
from sandrun.errors.lifecycle import ExecUnavailable
from sandrun.exec_models import STDIN, ExecControl, ExecRequest, ExecResult

# What `read` gives: a stream's bytes, then the exit code (an int) once it ended.
Output = tuple[int, bytes] | int


class ExecStream(ABC):
    """One running command: feed it, signal it, resize its terminal, read it to its end."""

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def eof(self) -> None: ...

    @abstractmethod
    def resize(self, rows: int, cols: int) -> None: ...

    @abstractmethod
    def signal(self, name: str) -> None: ...

    @abstractmethod
    def read(self) -> Output:
        """The next output, or the exit code once it ended (then again, every call)."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> ExecStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def collect(stream: ExecStream, stdin: bytes | None = None) -> ExecResult:
    """Run to the end: give it `stdin` (then end of input), keep what it writes."""
    with stream:
        if stdin:
            stream.write(stdin)
        stream.eof()
        out = {1: bytearray(), 2: bytearray()}
        while not isinstance(got := stream.read(), int):
            out[got[0]] += got[1]
        return ExecResult(exit_code=got, stdout=bytes(out[1]), stderr=bytes(out[2]))


class RemoteExec(ExecStream):
    """Over the server's WebSocket."""

    def __init__(self, address: str, headers: dict[str, str], request: ExecRequest) -> None:
        self._opened = contextlib.ExitStack()
        try:
            self.ws: ClientConnection = self._opened.enter_context(
                connect(address, additional_headers=headers, open_timeout=30, max_size=2**24)
            )
            self.ws.send(request.model_dump_json())
        except (OSError, WebSocketException) as exc:
            raise ExecUnavailable(f"cannot reach the server for an exec: {exc}") from None
        self._exit: int | None = None

    def _control(self, control: ExecControl) -> None:
        with contextlib.suppress(OSError, WebSocketException):
            self.ws.send(control.model_dump_json(exclude_none=True))

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError, WebSocketException):
            self.ws.send(bytes([STDIN]) + data)

    def eof(self) -> None:
        self._control(ExecControl(eof=True))

    def resize(self, rows: int, cols: int) -> None:
        self._control(ExecControl(resize=(rows, cols)))

    def signal(self, name: str) -> None:
        self._control(ExecControl(signal=name))

    def read(self) -> Output:
        while self._exit is None:
            try:
                message = self.ws.recv()
            except (OSError, WebSocketException):
                raise ExecUnavailable("the connection ended before the command did") from None
            if isinstance(message, bytes):
                if message[:1] in (b"\x01", b"\x02"):
                    return message[0], message[1:]
                continue
            try:
                control = ExecControl.model_validate_json(message)
            except PydanticError:
                continue
            if control.error is not None:
                e = control.error
                raise rebuilt(e.code, e.message, e.field, e.suggestions)
            self._exit = control.exit
        return self._exit

    def close(self) -> None:
        with contextlib.suppress(OSError, WebSocketException):
            self._opened.close()


class LocalExec(ExecStream):
    """Embedded: the command is this process's child, entered from the agent's record."""

    def __init__(
        self, record: Path, request: ExecRequest, on_exit: Callable[[int], None] | None = None
    ) -> None:
        from sandrun.agent.execs import Exec, Inside  # the agent's code, only for this

        try:
            inside = Inside.from_json(record.read_text())
        except FileNotFoundError:
            raise ExecUnavailable(
                "the local agent has no record of the attempt running (it is starting, or "
                "ran before exec existed)"
            ) from None
        except OSError as exc:  # another user's agent (its record is 0600)
            raise ExecUnavailable(f"cannot read where the job runs: {exc}") from None
        try:
            self.process = Exec(inside, request)
        except OSError as exc:
            raise ExecUnavailable(f"cannot enter the job's sandbox: {exc}") from None
        self._out: queue.Queue[Output] = queue.Queue()
        self._exit: int | None = None
        self._on_exit = on_exit
        threading.Thread(target=self._pump, name="exec-output", daemon=True).start()

    def _pump(self) -> None:
        for item in self.process.outputs():
            self._out.put(item)
        self._out.put(self.process.wait())

    def write(self, data: bytes) -> None:
        self.process.feed(data)

    def eof(self) -> None:
        self.process.eof()

    def resize(self, rows: int, cols: int) -> None:
        self.process.resize(rows, cols)

    def signal(self, name: str) -> None:
        self.process.send_signal(name)

    def read(self) -> Output:
        if self._exit is None:
            got = self._out.get()
            if not isinstance(got, int):
                return got
            self._exit = got
            if self._on_exit is not None:
                self._on_exit(got)
        return self._exit

    def close(self) -> None:
        with contextlib.suppress(SandrunError):
            self.process.kill()
