"""A remote agent's standing WebSocket to its server, down which execs are asked for.

The agent connects out (it may sit behind NAT), keeps the connection open with pings, and
reconnects when it drops. Each `ExecAsk` gets a connection of its own back to the server
(`/v1/agent/exec/{session}`), over which the command's input and output go
(server/execs.py, docs/lifecycle.md).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from urllib.parse import quote

from pydantic import ValidationError as PydanticError
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from sandrun.agent.execs import Exec, Inside, pump
from sandrun.errors import SandrunError
from sandrun.errors.lifecycle import ExecUnavailable
from sandrun.exec_models import STDIN, ExecAsk, ExecControl, ExecRequest
from sandrun.httpjson import ws_url
from sandrun.models import ErrorBody

log = logging.getLogger("sandrun.agent")
RECONNECT_MAX = 10.0  # seconds between tries to reopen a dropped channel, at most


class ExecChannel:
    """Keeps the channel open on its own thread while the agent runs."""

    def __init__(
        self, url: str, token: str | None, inside: Callable[[str, int], Inside | None]
    ) -> None:
        self.url, self.inside = url, inside
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.node = ""
        self._stop = threading.Event()
        self._ws: ClientConnection | None = None
        self._thread: threading.Thread | None = None

    def start(self, node: str) -> None:
        self.node = node
        self._thread = threading.Thread(target=self._keep_open, name="exec-channel", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _connect(self, path: str) -> ClientConnection:
        address = ws_url(self.url, f"{path}?node={quote(self.node)}")
        return connect(address, additional_headers=self.headers, open_timeout=10)

    def _keep_open(self) -> None:
        wait = 0.5
        while not self._stop.is_set():
            try:
                with self._connect("/v1/agent/channel") as ws:
                    self._ws, wait = ws, 0.5
                    for message in ws:
                        if isinstance(message, str):
                            self._asked(message)
            except (OSError, WebSocketException) as exc:
                if not self._stop.is_set():
                    log.warning("exec channel: %s; reconnecting in %.1fs", exc, wait)
            self._ws = None
            self._stop.wait(wait)
            wait = min(wait * 2, RECONNECT_MAX)

    def _asked(self, text: str) -> None:
        try:
            ask = ExecAsk.model_validate_json(text)
        except PydanticError:
            log.warning("exec channel: a message that is no exec ask was ignored")
            return
        threading.Thread(target=self._serve, args=(ask,), name="exec", daemon=True).start()

    def _serve(self, ask: ExecAsk) -> None:
        try:
            with self._connect(f"/v1/agent/exec/{quote(ask.session)}") as ws:
                inside = self.inside(ask.job_id, ask.attempt)
                if inside is None:
                    missing = ExecUnavailable(f"attempt {ask.attempt} does not run on this node")
                    ws.send(
                        ExecControl(error=ErrorBody.of(missing)).model_dump_json(exclude_none=True)
                    )
                    return
                serve(ws, inside, ask.request)
        except (OSError, WebSocketException) as exc:
            log.warning("exec for job %s: %s", ask.job_id, exc)


def serve(ws: ClientConnection, inside: Inside, request: ExecRequest) -> None:
    """Run `request` inside and relay it over `ws`: stdin and controls in, output out,
    then its exit code. The command is killed if the connection goes first."""
    try:
        process = Exec(inside, request)
    except (OSError, SandrunError) as exc:
        error = exc if isinstance(exc, SandrunError) else ExecUnavailable(str(exc))
        ws.send(ExecControl(error=ErrorBody.of(error)).model_dump_json(exclude_none=True))
        return

    def listen() -> None:
        try:
            for message in ws:
                if isinstance(message, bytes):
                    if message[:1] == bytes([STDIN]):
                        process.feed(message[1:])
                    continue
                control = ExecControl.model_validate_json(message)
                if control.eof:
                    process.eof()
                if control.resize is not None:
                    process.resize(*control.resize)
                if control.signal is not None:
                    with contextlib.suppress(SandrunError):
                        process.send_signal(control.signal)
        except (OSError, WebSocketException, PydanticError):
            pass
        process.kill()  # the far side went: nobody is left to read it

    threading.Thread(target=listen, name="exec-input", daemon=True).start()
    code = pump(process, lambda stream, data: ws.send(bytes([stream]) + data))
    with contextlib.suppress(OSError, WebSocketException):
        ws.send(ExecControl(exit=code).model_dump_json(exclude_none=True))
