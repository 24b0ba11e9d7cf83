"""Heartbeats written together, answered below FastAPI, and how far behind the server is.

Thousands of idle agents each heartbeat every few seconds. One transaction per heartbeat
queued them behind long-polls for threads and pool connections until they took longer
than a lease. Here every heartbeat that arrives while the last batch is being written goes
into the next one (group commit): one transaction, on one thread and one database
connection of their own, whatever the request load. The lease reaper runs on that thread
too, so it never reads a lease a heartbeat already on its way has renewed.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sandrun.errors import SandrunError
from sandrun.models import Principal
from sandrun.protocol import HeartbeatReply, HeartbeatRequest
from sandrun.roles import Role
from sandrun.server.auth import agent, principal
from sandrun.service import Service
from sandrun.spec.parse import invalid_spec_from

T = TypeVar("T")
_TICK = 0.1  # how often the event loop's lag is sampled, seconds


class Heartbeats:
    def __init__(self, service: Service) -> None:
        self.service = service
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sandrun-beats")
        self._pending: list[tuple[HeartbeatRequest, str | None, float, asyncio.Future[object]]]
        self._pending = []
        self._writing: asyncio.Task[None] | None = None
        self._oldest = 0.0  # when the oldest heartbeat not yet written arrived (0: none)
        self.written: dict[str, float] = {}  # node -> monotonic time of its last beat here

    async def beat(self, request: HeartbeatRequest, operator: str | None) -> HeartbeatReply:
        """Write `request` with whatever else arrives meanwhile; its own answer or error."""
        answer = asyncio.get_running_loop().create_future()
        self._pending.append((request, operator, time.monotonic(), answer))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write())
        reply = await answer
        if isinstance(reply, BaseException):  # refused alone, or the batch's store failed
            raise reply
        assert isinstance(reply, HeartbeatReply)
        return reply

    async def on_thread(self, work: Callable[..., T], *args: Any) -> T:
        """Run `work(*args)` on the heartbeats' thread, after every batch already written,
        over a database connection of the thread's own."""

        def laned() -> T:
            with self.service.store.db.lane("heartbeats"):
                return work(*args)

        return await asyncio.get_running_loop().run_in_executor(self._thread, laned)

    def waiting(self) -> float:
        """How long the oldest heartbeat not yet written has waited, seconds."""
        return time.monotonic() - self._oldest if self._oldest else 0.0

    async def _write(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                self._oldest = batch[0][2]
                beats = [(request, operator) for request, operator, _, _ in batch]
                try:
                    replies = await self.on_thread(self.service.heartbeats, beats)
                except Exception as exc:  # the store failed: every beat in the batch did
                    replies = [exc] * len(batch)  # type: ignore[list-item]
                done = time.monotonic()
                for (request, _, _, answer), reply in zip(batch, replies, strict=True):
                    if not isinstance(reply, BaseException):
                        self.written[request.node] = done
                    if not answer.done():
                        answer.set_result(reply)
        finally:
            self._oldest = 0.0
            self._writing = None

    def close(self) -> None:
        """Stop taking work; one call still in flight ends when the service closes its
        connections (a database gone away must not keep the server from stopping)."""
        self._thread.shutdown(wait=False, cancel_futures=True)


class Lag:
    """How late this server is: its event loop (every request waits for it) and its
    heartbeats queue. The reaper gives each lease that much more time, so a node is
    declared lost because its own heartbeats stopped, never because the server was slow
    to read them."""

    def __init__(self, beats: Heartbeats, window: float) -> None:
        self.beats = beats
        self.window = window  # how far back a lag still counts: a lease
        self._samples: collections.deque[tuple[float, float]] = collections.deque()

    async def watch(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(_TICK)
            late = time.monotonic() - asked - _TICK
            self.note(max(late, self.beats.waiting()))

    def note(self, late: float) -> None:
        """Count a lateness of `late` seconds, seen now."""
        now = time.monotonic()
        self._samples.append((now, late))
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()

    def now(self) -> float:
        """The lag measured most recently, seconds."""
        return max(self._samples[-1][1] if self._samples else 0.0, self.beats.waiting())

    def worst(self) -> float:
        """The worst lag within a lease, seconds: what a lease may have lost to it."""
        return max([late for _, late in self._samples] + [self.beats.waiting()])


class HeartbeatFastPath:
    """`POST /v1/agent/heartbeat`, answered below FastAPI's routing and dependencies.

    A thousand agents beating every second is a thousand requests a second; FastAPI's
    per-request machinery cost about 1 ms of CPU each, which held one core. This ASGI layer
    answers the same request the route in `agents.py` documents (and would answer) with
    the same checks: the token's role, the body's model, the node's operator, every error
    in our shape.
    """

    PATH = "/v1/agent/heartbeat"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        response: Response
        try:
            caller = await agent(await principal(request))
            beat = HeartbeatRequest.model_validate_json(await request.body())
            beats: Heartbeats = request.app.state.beats
            reply = await beats.beat(beat, operator_of(caller))
            response = Response(reply.model_dump_json(), media_type="application/json")
        except SandrunError as exc:
            response = error_response(exc)
        except ValidationError as exc:
            response = error_response(invalid_spec_from(list(exc.errors()), strip=("body",)))
        await response(scope, receive, send)


def operator_of(caller: Principal) -> str | None:
    """The operator a caller acts for on nodes: none for an admin, who may act for any."""
    return None if caller.role is Role.ADMIN else caller.name


def error_response(exc: SandrunError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)
