"""The pool API: balances, credits, the ledger, cost reports, the pool's state, and
quarantine. Thin routes over the service (docs/pool.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from sandrun.errors import Forbidden, ValidationError
from sandrun.pool.models import (
    Balance,
    CostReport,
    CreditRequest,
    LedgerCheck,
    PoolNode,
    PoolStatus,
    Transfer,
)
from sandrun.server.auth import ERRORS, AdminDep, ServiceDep, UserDep, admin, viewer
from sandrun.server.params import Text
from sandrun.spec.text import NO_NUL
from sandrun.spec.units import DURATION_PATTERN, parse_duration

router = APIRouter(prefix="/v1", responses=ERRORS)
Name = Annotated[str | None, Query(pattern=NO_NUL, max_length=200)]


@router.get("/balance")
def balance(caller: UserDep, service: ServiceDep, owner: Name = None) -> Balance:
    """What the caller (an admin: `owner`) has available, and holds in escrow."""
    if owner is not None and viewer(caller) is not None and owner != caller.name:
        raise Forbidden("only an admin reads another owner's balance", field="owner")
    return service.balance(owner or caller.name)


@router.post("/credit")
def credit(body: CreditRequest, caller: AdminDep, service: ServiceDep) -> Balance:
    """Add USD to an owner's balance (a negative amount takes some back)."""
    return service.credit(body.owner, body.amount, body.memo or f"by {caller.name}")


@router.get("/ledger")
def ledger(
    caller: UserDep,
    service: ServiceDep,
    job: Name = None,
    account: Name = None,
) -> list[Transfer]:
    """Transfers of one job, or touching one account (yours unless you are an admin)."""
    mine = f"user:{caller.name}"
    return service.ledger(viewer(caller), job_id=job, account=account or mine)


@router.get("/ledger/check", dependencies=[Depends(admin)])
def ledger_check(service: ServiceDep) -> LedgerCheck:
    """Whether balances equal the sum of transfers and no ended job holds escrow."""
    return service.ledger_check()


@router.get("/cost")
def cost(
    caller: UserDep,
    service: ServiceDep,
    since: Annotated[str, Query(pattern=DURATION_PATTERN, max_length=64)] = "7d",
    by: Literal["job", "label", "day"] = "job",
) -> CostReport:
    """What the caller's jobs that ended since `since` ago cost, grouped by job, label or
    day."""
    try:
        ago = parse_duration(since)
    except ValueError as exc:
        raise ValidationError(f"since: {exc}", field="since") from None
    return service.cost_report(caller.name, service.clock() - ago, by)


@router.get("/pool")
def pool_status(caller: UserDep, service: ServiceDep) -> PoolStatus:
    """Nodes, capacity, queue, throughput and the rate of agreement."""
    return service.pool_status()


@router.get("/pool/nodes")
def pool_nodes(caller: UserDep, service: ServiceDep) -> list[PoolNode]:
    """Each node with its reputation and its operator's."""
    return service.pool_nodes()


@router.post("/nodes/{node}/quarantine", dependencies=[Depends(admin)])
def quarantine(node: Text, service: ServiceDep) -> PoolNode:
    """Stop a node (or `operator:NAME`'s nodes) from taking jobs until released."""
    return service.set_quarantined(node, True)


@router.post("/nodes/{node}/release", dependencies=[Depends(admin)])
def release(node: Text, service: ServiceDep) -> PoolNode:
    return service.set_quarantined(node, False)
