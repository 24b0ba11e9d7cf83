"""Exec into a running job through the server, whose agents may sit behind NAT.

Three WebSockets meet here. Each agent keeps one open to the server, its **channel**
(`/v1/agent/channel?node=ID`). A client opens `/v1/jobs/{id}/exec` and sends what to run
(`ExecRequest`); the server checks it may (the job's owner or an admin, the job running),
records it as an event, and sends an `ExecAsk` with a fresh session id down the channel of
the job's node. The agent connects back, `/v1/agent/exec/{session}`, runs the command
inside the attempt, and the server relays frames both ways until the agent says
`{"exit": N}` (docs/lifecycle.md). The meeting is in this server process's memory: a
client and an agent reach each other only through the same server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError as PydanticError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from sandrun.errors import Forbidden, SandrunError, ValidationError
from sandrun.errors.lifecycle import ExecUnavailable
from sandrun.exec_models import ExecAsk, ExecControl, ExecRequest
from sandrun.models import ErrorBody, Principal
from sandrun.roles import Role
from sandrun.server.auth import token_principal, viewer
from sandrun.server.params import JobId
from sandrun.service import Service

router = APIRouter()
FIRST_MESSAGE = 30.0  # seconds a client has to say what to run
AGENT_CONNECT = 15.0  # seconds an agent has to connect back for a session


@dataclass
class _Session:
    node: str
    agent: asyncio.Future[WebSocket] = field(default_factory=asyncio.Future)
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class ExecHub:
    """This process's open agent channels (by node id) and sessions awaiting their agent."""

    channels: dict[str, WebSocket] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)


def _hub(ws: WebSocket) -> ExecHub:
    hub: ExecHub = ws.app.state.execs
    return hub


async def _refuse(ws: WebSocket, exc: SandrunError) -> None:
    """Say why in our error shape, then close with 4000 + its HTTP status."""
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await ws.send_text(ExecControl(error=ErrorBody.of(exc)).model_dump_json(exclude_none=True))
        await ws.close(code=4000 + exc.http_status)


async def _caller(ws: WebSocket, roles: tuple[Role, ...]) -> Principal:
    caller = await token_principal(ws)
    if caller.role not in roles:
        raise Forbidden(f"a {caller.role} token cannot do that here")
    return caller


@router.websocket("/v1/jobs/{job_id}/exec")
async def exec_in_job(ws: WebSocket, job_id: JobId) -> None:
    await ws.accept()
    service: Service = ws.app.state.service
    hub, session_id = _hub(ws), secrets.token_urlsafe(24)
    try:
        caller = await _caller(ws, (Role.USER, Role.ADMIN))
        request = _request(await asyncio.wait_for(ws.receive_text(), FIRST_MESSAGE))
        node, attempt = await run_in_threadpool(
            service.begin_exec, job_id, request, caller.name, viewer(caller)
        )
        channel = hub.channels.get(node)
        if channel is None:
            raise ExecUnavailable(
                f"job {job_id}'s agent has no channel open to this server (an agent from "
                "before exec, or one connected to another server process)",
                suggestions=["upgrade the agent", "route clients and agents to one server"],
            )
        session = hub.sessions[session_id] = _Session(node)
        ask = ExecAsk(session=session_id, job_id=job_id, attempt=attempt, request=request)
        await channel.send_text(ask.model_dump_json())
        try:
            agent = await asyncio.wait_for(asyncio.shield(session.agent), AGENT_CONNECT)
        except TimeoutError:
            raise ExecUnavailable(
                f"job {job_id}'s agent did not connect back within {AGENT_CONNECT:g} s"
            ) from None
        code = await _relay(ws, agent)
        session.done.set()
        if code is not None:
            await run_in_threadpool(service.end_exec, job_id, attempt, request, code)
    except SandrunError as exc:
        await _refuse(ws, exc)
    except (WebSocketDisconnect, TimeoutError):
        pass
    finally:
        if (gone := hub.sessions.pop(session_id, None)) is not None:
            gone.done.set()
    if ws.client_state is WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError):
            await ws.close()


def _request(text: str) -> ExecRequest:
    try:
        return ExecRequest.model_validate_json(text)
    except PydanticError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise ValidationError(f"{where}: {first['msg']}", field=where) from None


async def _relay(client: WebSocket, agent: WebSocket) -> int | None:
    """Frames both ways until the agent says how the command ended (its exit code), or
    either side goes (None)."""
    ended: list[int] = []

    async def down() -> None:  # the agent's output and its end, to the client
        while True:
            message = await agent.receive()
            if message["type"] == "websocket.disconnect":
                return
            if (text := message.get("text")) is not None:
                try:
                    control = ExecControl.model_validate_json(text)
                except PydanticError:
                    continue  # not ours to pass on
                await client.send_text(text)
                if control.exit is not None or control.error is not None:
                    ended.extend([control.exit] if control.exit is not None else [])
                    return
            elif (data := message.get("bytes")) is not None:
                await client.send_bytes(data)

    async def up() -> None:  # the client's input and controls, to the agent
        while True:
            message = await client.receive()
            if message["type"] == "websocket.disconnect":
                return
            await _forward(agent, message)

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await agent.close()
    if not ended and client.client_state is WebSocketState.CONNECTED:
        lost = ExecUnavailable("the agent's connection ended before the command did")
        await _refuse(client, lost)
    return ended[0] if ended else None


async def _forward(to: WebSocket, message: MutableMapping[str, Any]) -> None:
    if (text := message.get("text")) is not None:
        await to.send_text(text)
    elif (data := message.get("bytes")) is not None:
        await to.send_bytes(data)


@router.websocket("/v1/agent/channel")
async def agent_channel(ws: WebSocket, node: str) -> None:
    """An agent's standing connection: exec asks come down it. One per node; a newer one
    (the agent reconnected) replaces the older."""
    await ws.accept()
    hub = _hub(ws)
    try:
        await _as_node(ws, node)
    except SandrunError as exc:
        await _refuse(ws, exc)
        return
    hub.channels[node] = ws
    try:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass  # an agent says nothing here; its pings keep it open
    finally:
        if hub.channels.get(node) is ws:
            del hub.channels[node]


@router.websocket("/v1/agent/exec/{session}")
async def agent_exec(ws: WebSocket, session: str, node: str) -> None:
    """An agent's end of one exec: the session's node, and only it, may connect."""
    await ws.accept()
    hub = _hub(ws)
    try:
        await _as_node(ws, node)
        waiting = hub.sessions.get(session)
        if waiting is None or waiting.node != node or waiting.agent.done():
            raise ExecUnavailable(f"no exec session {session!r} waits for node {node!r}")
    except SandrunError as exc:
        await _refuse(ws, exc)
        return
    waiting.agent.set_result(ws)
    await waiting.done.wait()  # the client's handler relays; this socket lives until then


async def _as_node(ws: WebSocket, node: str) -> None:
    """An agent token may speak for the nodes its operator registered (or any: admin)."""
    caller = await _caller(ws, (Role.AGENT, Role.ADMIN))
    if caller.role is not Role.ADMIN:
        service: Service = ws.app.state.service
        await run_in_threadpool(service.check_operator, node, caller.name)
