"""The pool's calls: a job's terms at submit, balances and credits, the ledger and its
check, cost reports, reputation, quarantine and the pool's state (docs/pool.md)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandrun.errors import Forbidden, NodeNotFound, ValidationError
from sandrun.models import Attempt, JobRecord, NodeInfo
from sandrun.pool.costs import MICRO, Terms, fitting_timeout, terms_for
from sandrun.pool.models import (
    Balance,
    CostLine,
    CostReport,
    LedgerCheck,
    PoolNode,
    PoolStatus,
    Reputation,
    Transfer,
)
from sandrun.pool.trust import Standing
from sandrun.signing import Identity, countersign_claim
from sandrun.spec import JobSpec
from sandrun.spec.policy import Policy
from sandrun.store import Store
from sandrun.store.ledger import dollars, user

COST_GROUPS = ("job", "label", "day")


def price(spec: JobSpec, policy: Policy) -> tuple[JobSpec, Terms | None]:
    """A job's terms under the pool's policy, and its spec as it will run: with the ledger
    on, a job without a timeout gets the pool's default, and one whose most cost is over
    its `max_price` gets the longest timeout that fits it."""
    pool = policy.pool
    if not pool.ledger:
        return spec, terms_for(spec, pool) if spec.consensus is not None else None
    if spec.timeout is None:
        spec = spec.model_copy(update={"timeout": pool.default_timeout})
    terms = terms_for(spec, pool)
    cap = round((spec.max_price or 0) * MICRO)
    if spec.max_price is None or terms.hold <= cap:
        return spec, terms
    timeout = fitting_timeout(spec, terms, cap)
    if timeout is None or timeout < 1:
        raise ValidationError(
            f"max_price {dollars(cap)} does not cover one second of this job "
            f"(its resources and replicas)",
            field="max_price",
            suggestions=["raise max_price, or ask for fewer resources or replicas"],
        )
    spec = spec.model_copy(update={"timeout": min(timeout, spec.timeout or timeout)})
    return spec, terms_for(spec, pool)


def _reputation(standing: Standing) -> Reputation:
    return Reputation(**vars(standing), score=round(standing.score, 4))


class PoolCalls:
    """The pool half of `Service`."""

    store: Store
    policy: Policy
    clock: Callable[[], float]
    nodes: Callable[[], list[NodeInfo]]  # Service's
    get: Callable[[str, str | None], JobRecord]  # Service's: a job its viewer may see
    _identity: Identity | None = None

    def server_identity(self) -> Identity:
        """This deployment's Ed25519 identity: made by its first server, kept in the
        database, so every server on it is one worker to a pool coordinator."""
        if self._identity is None:
            candidate = base64.b64encode(Identity.generate().raw()).decode()
            kept = self.store.server_key(candidate, self.clock())
            self._identity = Identity.from_raw(base64.b64decode(kept))
        return self._identity

    def countersignature(self, attempt: Attempt) -> str | None:
        """This server's signature over the attempt's signed result (None: unsigned)."""
        if attempt.signature is None or attempt.worker_id is None:
            return None
        claim = countersign_claim(
            attempt.job_id, attempt.number, attempt.worker_id, attempt.signature
        )
        return self.server_identity().sign(claim)

    def balance(self, owner: str) -> Balance:
        """An owner's balance (or `operator:NAME`'s: what it earned, nothing held)."""
        held = self.store.balance(owner)
        return Balance(owner=owner, available=held.available / MICRO, held=held.held / MICRO)

    def credit(self, owner: str, amount: float, memo: str | None = None) -> Balance:
        """Add (or take back) USD to an owner's balance: an admin's call."""
        micro = round(amount * MICRO)
        self.store.credit(owner, micro, self.clock(), memo)
        return self.balance(owner)

    def ledger(
        self, viewer: str | None, job_id: str | None = None, account: str | None = None
    ) -> list[Transfer]:
        """Transfers of one job, or touching one account (newest first); a user sees
        their own account and jobs only (`viewer` None: an admin)."""
        if job_id is not None:
            job = self.get(job_id, viewer)
            rows = self.store.transfers(job_id=job.id)
        else:
            if viewer is not None and account not in (None, user(viewer)):
                raise Forbidden("a user reads only their own account", field="account")
            rows = self.store.transfers(account=account or user(viewer or "local"))
        return [Transfer(**{**r, "amount": r["amount"] / MICRO}) for r in rows]

    def ledger_check(self) -> LedgerCheck:
        found = self.store.ledger_check()
        return LedgerCheck(**{**found, "escrow": found["escrow"] / MICRO})

    def cost_report(self, owner: str, since: float, by: str = "job") -> CostReport:
        if by not in COST_GROUPS:
            raise ValidationError(
                f"by must be one of {', '.join(COST_GROUPS)}, not {by!r}", field="by"
            )
        lines: dict[str, list[int]] = {}
        rows = self.store.job_costs(owner, since)
        for row in rows:
            for key in _keys(row, by):
                line = lines.setdefault(key, [0, 0])
                line[0] += 1
                line[1] += int(row["cost"])
        out = [CostLine(key=k, jobs=n, cost=c / MICRO) for k, (n, c) in lines.items()]
        out.sort(key=lambda line: (-line.cost, line.key))
        total = sum(int(r["cost"]) for r in rows)
        return CostReport(since=since, by=by, total=total / MICRO, lines=out)

    def set_quarantined(self, node: str, quarantined: bool) -> PoolNode:
        """Quarantine or release a node (by id or name), or an operator (`operator:NAME`)."""
        if node.startswith("operator:"):
            if not any(f"operator:{n.operator or n.id}" == node for n in self.nodes()):
                raise NodeNotFound(f"no node is run by {node}", field="node")  # nothing kept
            self.store.set_quarantined(node, quarantined, self.clock())
            return next(n for n in self.pool_nodes() if f"operator:{n.operator}" == node)
        match = [n for n in self.nodes() if node in (n.id, n.name)]
        if not match:
            raise NodeNotFound(f"no node is called {node!r}", field="node")
        subject = f"node:{match[0].public_key or match[0].id}"
        self.store.set_quarantined(subject, quarantined, self.clock())
        return next(n for n in self.pool_nodes() if n.id == match[0].id)

    def pool_nodes(self) -> list[PoolNode]:
        records = self.store.reputations()
        out = []
        for n in self.nodes():
            operator = n.operator or n.id
            out.append(
                PoolNode(
                    id=n.id,
                    name=n.name,
                    operator=operator,
                    state=n.state,
                    running=n.running,
                    capacity=n.capacity.model_dump(),
                    reputation=_reputation(records.get(f"node:{n.public_key or n.id}", Standing())),
                    operator_reputation=_reputation(
                        records.get(f"operator:{operator}", Standing())
                    ),
                )
            )
        return out

    def pool_status(self) -> PoolStatus:
        nodes = self.pool_nodes()
        live = [n for n in nodes if n.state == "active"]
        counts = self.store.pool_counts(self.clock() - 3600)
        records = [s for k, s in self.store.reputations().items() if k.startswith("node:")]
        checked = sum(s.valid + s.invalid for s in records)
        return PoolStatus(
            nodes=len(nodes),
            live_nodes=len(live),
            operators=len({n.operator for n in live}),
            quarantined=sum(
                1 for n in nodes if n.reputation.quarantined or n.operator_reputation.quarantined
            ),
            cpus=sum(float(n.capacity.get("cpus", 0)) for n in live),
            gpus=sum(int(n.capacity.get("gpus", 0)) for n in live),
            pending=counts["pending"],
            running=counts["running"],
            ended_last_hour=counts["ended"],
            agreed_last_hour=counts["agreed"],
            no_consensus_last_hour=counts["no_consensus"],
            agreement_rate=round(sum(s.valid for s in records) / checked, 4) if checked else None,
            ledger=self.policy.pool.ledger,
        )


def _keys(row: dict[str, Any], by: str) -> list[str]:
    if by == "job":
        return [f"{row['id']} {row['name']}"]
    if by == "day":
        day = datetime.fromtimestamp(row["finished_at"], UTC)
        return [day.strftime("%Y-%m-%d")]
    return [f"{k}={v}" for k, v in sorted(row["labels"].items())] or ["(no labels)"]
