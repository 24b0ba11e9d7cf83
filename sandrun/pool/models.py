"""The pool on the wire: balances, ledger entries, cost reports, reputation, the pool's
state. Amounts are USD (floats) here; the store keeps integer micro-USD."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from sandrun.spec.units import number_only


class PoolWire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Balance(PoolWire):
    owner: str
    available: float  # what new jobs may hold
    held: float  # what this owner's unfinished jobs hold in escrow


class CreditRequest(PoolWire):
    owner: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@:/+=-]+$")
    # USD; negative takes back. A number only: true is not 1.
    amount: Annotated[float, Field(ge=-1_000_000, le=1_000_000), BeforeValidator(number_only)]
    memo: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00]*$")


class Transfer(PoolWire):
    id: int
    at: float
    debit: str
    credit: str
    amount: float
    kind: str  # hold | payment | fee | refund | credit | debit
    job_id: str | None = None
    memo: str | None = None


class LedgerCheck(PoolWire):
    ok: bool
    problems: list[str]
    accounts: int
    transfers: int
    escrow: float


class CostLine(PoolWire):
    key: str  # a job id, a label's value, or a day (YYYY-MM-DD, UTC)
    jobs: int
    cost: float


class CostReport(PoolWire):
    since: float
    by: str
    total: float
    lines: list[CostLine]


class Reputation(PoolWire):
    valid: int = 0
    invalid: int = 0
    streak: int = 0
    lost: int = 0
    timeouts: int = 0
    quarantined: bool = False
    score: float = 1.0  # valid / checked (1.0 before any)


class PoolNode(PoolWire):
    id: str
    name: str
    operator: str
    state: str
    running: int
    capacity: dict[str, Any]
    reputation: Reputation
    operator_reputation: Reputation


class PoolStatus(PoolWire):
    nodes: int
    live_nodes: int
    operators: int
    quarantined: int
    cpus: float
    gpus: int
    pending: int
    running: int
    ended_last_hour: int  # throughput
    agreed_last_hour: int  # jobs with consensus that completed
    no_consensus_last_hour: int
    agreement_rate: float | None  # valid / checked results across the pool
    ledger: bool  # whether jobs are priced


class Countersignature(PoolWire):
    """A server's signature over an attempt's signed result (`signing.countersign_claim`),
    and the key that made it: the `worker_id` its public `/health` names."""

    server_id: str
    countersignature: str | None = None  # None: the attempt is not signed
