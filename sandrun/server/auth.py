"""Who is calling: bearer tokens, roles, and the owner a user's requests are scoped to."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from sandrun.errors import AuthenticationError, Forbidden
from sandrun.models import ErrorBody, Principal
from sandrun.roles import Role
from sandrun.service import Service

# With auth off (a loopback-only server), every caller is this admin.
LOCAL_ADMIN = Principal(name="local", role=Role.ADMIN)


# Resolved tokens are remembered briefly: a busy client's requests should not each cost a
# store read. A revoked token stops working on every server within this many seconds.
TOKEN_CACHE_SECONDS = 0.5


async def service_of(request: Request) -> Service:  # async: no thread hop per request
    service: Service = request.app.state.service
    return service


async def principal(request: Request) -> Principal:
    if not request.app.state.auth:
        return LOCAL_ADMIN
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise AuthenticationError("this server needs a token: Authorization: Bearer <token>")
    secret = secret.strip()
    # One store read per token per interval, however many requests arrive meanwhile:
    # they share the lookup in flight.
    cache: dict[str, tuple[float, asyncio.Future[Principal | None]]] = request.app.state.tokens
    hit = cache.get(secret)
    if hit is None or hit[0] <= time.monotonic():
        if len(cache) >= 10_000:  # a flood of made-up tokens must not grow it without end
            cache.clear()
        service: Service = request.app.state.service
        lookup = asyncio.ensure_future(run_in_threadpool(service.authenticate, secret))
        hit = cache[secret] = (time.monotonic() + TOKEN_CACHE_SECONDS, lookup)
    try:
        found = await asyncio.shield(hit[1])
    except Exception:  # the lookup failed (the store down, say): not remembered
        if cache.get(secret) is hit:
            del cache[secret]
        raise
    if found is None:
        raise AuthenticationError("that token is not valid")
    return found


async def user(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    if caller.role not in (Role.USER, Role.ADMIN):
        raise Forbidden(f"a {caller.role} token cannot use the job API")
    return caller


async def agent(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    if caller.role not in (Role.AGENT, Role.ADMIN):
        raise Forbidden(f"a {caller.role} token cannot use the agent API")
    return caller


async def admin(caller: Annotated[Principal, Depends(principal)]) -> Principal:
    if caller.role is not Role.ADMIN:
        raise Forbidden(f"a {caller.role} token cannot use the admin API")
    return caller


def viewer(caller: Principal) -> str | None:
    """The owner whose jobs `caller` may see; None means all (admins)."""
    return None if caller.role is Role.ADMIN else caller.name


# Documented on every route, so clients (and schema checks) know each error's shape.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in [
        (400, "bad input"),
        (401, "no valid token"),
        (403, "the token's role may not do this"),
        (404, "no such job (or not yours), or no such output"),
        (409, "not allowed in the job's state, a stale attempt, or insufficient funds"),
        (422, "the body or a parameter is not valid; `field` names it"),
        (503, "the store is unavailable"),
    ]
}

ServiceDep = Annotated[Service, Depends(service_of)]
UserDep = Annotated[Principal, Depends(user)]
AgentDep = Annotated[Principal, Depends(agent)]
AdminDep = Annotated[Principal, Depends(admin)]
