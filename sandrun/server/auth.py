"""Who is calling: bearer tokens, roles, and the owner a user's requests are scoped to."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from sandrun.errors import AuthenticationError, Forbidden
from sandrun.models import ErrorBody, Principal
from sandrun.roles import Role
from sandrun.service import Service
from sandrun.signing import (
    AT_HEADER,
    KEY_HEADER,
    PROOF_WINDOW,
    SIGNATURE_HEADER,
    request_claim,
    verify,
)

# With auth off (a loopback-only server), every caller is this admin.
LOCAL_ADMIN = Principal(name="local", role=Role.ADMIN)


# Resolved tokens are remembered briefly: a busy client's requests should not each cost a
# store read. A revoked token stops working on every server within this many seconds.
TOKEN_CACHE_SECONDS = 0.5


async def service_of(request: Request) -> Service:  # async: no thread hop per request
    service: Service = request.app.state.service
    return service


async def principal(request: Request) -> Principal:
    headers = request.headers
    if request.app.state.auth and KEY_HEADER in headers and not headers.get("authorization"):
        return await _signed_by_key(request)
    return await token_principal(request)


async def token_principal(request: HTTPConnection) -> Principal:
    """The caller its bearer token names (a WebSocket's too: they carry no signed body)."""
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


async def _signed_by_key(request: Request) -> Principal:
    """A request signed by an Ed25519 key instead of a token: its caller is the key's own
    identity, `key:<base64>`, a user with an account of its own (docs/pool.md)."""
    service: Service = request.app.state.service
    if not service.policy.pool.key_users:
        raise AuthenticationError(
            "this server takes tokens, not key-signed requests (its policy's pool.key_users)"
        )
    key = request.headers[KEY_HEADER]
    try:
        at = float(request.headers.get(AT_HEADER, ""))
    except ValueError:
        raise AuthenticationError(f"{AT_HEADER} must be the signed time, in seconds") from None
    now = time.time()
    if not abs(now - at) <= PROOF_WINDOW:  # NaN fails too
        raise AuthenticationError("the request's signed time is too far from the server's clock")
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    query = request.scope.get("query_string", b"")
    target = (raw + (b"?" + query if query else b"")).decode("latin-1")
    claim = request_claim(request.method, target, at, await request.body())
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not verify(key, claim, signature):
        raise AuthenticationError("the request's signature does not match its key")
    if request.method not in ("GET", "HEAD"):  # a replayed read changes nothing
        fresh = await run_in_threadpool(
            service.store.note_request, signature, now, 2 * PROOF_WINDOW
        )
        if not fresh:
            raise AuthenticationError("this signed request was already made (a replay)")
    return Principal(name=f"key:{key}", role=Role.USER)


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
