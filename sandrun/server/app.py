"""The HTTP API: FastAPI routes over the service, errors as JSON, a lease reaper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

import sandrun
from sandrun.errors import SandrunError
from sandrun.models import ErrorBody
from sandrun.server import agents, cors, data, execs, jobs, pipelines, pool, public, uploads
from sandrun.server.beats import HeartbeatFastPath, Heartbeats, Lag, error_response
from sandrun.server.bodylimit import SubmitSizeLimit
from sandrun.server.cors import PublicCors
from sandrun.server.notify import Notifier
from sandrun.server.workboard import WorkBoard
from sandrun.service import Service
from sandrun.service.quota import PublicApi
from sandrun.spec.parse import invalid_spec_from

log = logging.getLogger("sandrun.server")
ROUTERS = (
    jobs.router,
    pipelines.router,
    pool.router,
    data.router,
    agents.router,
    uploads.router,
    public.router,
    execs.router,
)

# Which service changes wake whom: claims wait for work, log followers for output or ends.
# "reconnected": the PostgreSQL listener was away and may have missed anything.
_WORK = {"submitted", "lost", "finished", "cancel", "reconnected"}
_LOGS = {"logs", "finished", "lost", "cancel", "reconnected"}


def create_app(
    service: Service,
    *,
    auth: bool = True,
    public_api: PublicApi | None = None,
    public_cors: str = "*",
) -> FastAPI:
    work, logs = WorkBoard(recheck=service.lease_seconds), Notifier()
    beats = Heartbeats(service)
    lag = Lag(beats, window=service.lease_seconds)

    def on_change(kind: str) -> None:
        if kind in _WORK:
            work.bump_threadsafe()
        if kind in _LOGS:
            logs.bump_threadsafe()

    service.on_change(on_change)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        work.attach(loop)
        logs.attach(loop)
        await run_in_threadpool(service.resume_after_restart)
        tasks = [asyncio.create_task(lag.watch()), asyncio.create_task(_reap(service, lag))]
        yield
        for task in tasks:
            task.cancel()
        work.close()
        beats.close()

    app = FastAPI(
        title="sandrun",
        version=sandrun.__version__,
        description="Run jobs on a pool of machines.",
        lifespan=lifespan,
        # No OpenTelemetry here: its per-request check of the global providers was a
        # tenth of the server's CPU under a thousand agents' heartbeats.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service
    app.state.auth = auth
    app.state.work = work
    app.state.logs = logs
    app.state.beats = beats
    app.state.lag = lag
    app.state.tokens = {}  # secret -> (expires, its lookup): see auth.principal
    app.state.public_api = public_api or PublicApi()
    app.state.execs = execs.ExecHub()
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(SubmitSizeLimit)
    app.add_middleware(HeartbeatFastPath)
    if allowed := cors.origins(public_cors):
        app.add_middleware(PublicCors, allow=allowed)
    _health(app, lag)
    _answer_errors_in_our_shape(app)
    return app


def _health(app: FastAPI, lag: Lag) -> None:
    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        """Up, and how far behind (seconds): its event loop or its heartbeat writes."""
        return {"status": "ok", "version": sandrun.__version__, "lag_seconds": lag.now()}


def _answer_errors_in_our_shape(app: FastAPI) -> None:
    """Every error, ours or the framework's, answers as an ErrorBody."""

    @app.exception_handler(SandrunError)
    async def sandrun_error(request: Request, exc: SandrunError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Framework errors (a body that is not JSON, an unknown route) keep our error shape.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_input")
        body = ErrorBody(code=code, message=str(exc.detail))
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names only the first route's methods
            headers = {**(headers or {}), "Allow": ", ".join(_allowed(request))}
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = invalid_spec_from(list(exc.errors()), strip=("body", "query", "path"))
        return JSONResponse(error.to_dict(), status_code=422)


def _allowed(request: Request) -> list[str]:
    """The methods of the routes at this request's path; a path a route names literally
    (/v1/jobs/wait) is that route's alone, as the schema documents it."""
    path = request.url.path
    matching = [
        route
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.path_regex.match(path)
    ]
    literal = [route for route in matching if route.path == path]
    return sorted({m for route in literal or matching for m in route.methods or ()})


async def _reap(service: Service, lag: Lag) -> None:
    """End as node_lost the attempts whose agents stopped renewing their leases.

    A server that has just started (after a crash, say) first gives agents a lease to reach
    it: leases that ran out while no server was up say nothing about their agents. Each
    lease gets as much more time as this server has lagged within a lease, and the reaper
    runs on the heartbeats' thread, after every heartbeat already received is written.
    """
    await asyncio.sleep(service.lease_seconds)
    period = min(5.0, service.lease_seconds / 3)
    while True:
        grace = lag.worst()
        try:
            lost = await lag.beats.on_thread(service.expire_leases, grace)
            await lag.beats.on_thread(service.preempt)
        except SandrunError as exc:
            log.warning("lease reaper: %s", exc)
            lost = []
        if grace > 1.0:
            log.warning("this server lags %.1f s: leases get as long again", grace)
        for job_id, attempt in lost:
            log.info("attempt %d of job %s lost its lease", attempt, job_id)
        asked = time.monotonic()
        await asyncio.sleep(period)
        lag.note(time.monotonic() - asked - period)  # the reaper may wake before the watch
