"""The escrow ledger, inside the transactions that accept and end jobs (issue 23).

Double entry in integer micro-USD: a transfer moves an amount from one account to another
and both balances change with it, in the transaction that changes the job's state — so
the ledger and the jobs cannot disagree. Transfers are never changed (the database refuses
it); a mistake is undone by another transfer. Accounts: `user:OWNER` (what an owner has
available), `operator:NAME` (what a node's operator earned), `escrow` (what jobs hold),
`platform` (fees), `world` (where credits come from: the one account that goes negative).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sandrun.errors import InsufficientFunds
from sandrun.models import Capacity, JobRecord
from sandrun.pool import costs
from sandrun.pool.costs import MICRO, Metered, Terms
from sandrun.spec import JobSpec
from sandrun.states import JobState
from sandrun.store.database import Row, Tx
from sandrun.store.transitions import must

ESCROW, PLATFORM, WORLD = "escrow", "platform", "world"


def user(owner: str) -> str:
    return f"user:{owner}"


def operator(name: str) -> str:
    return f"operator:{name}"


def dollars(micro: int) -> str:
    return f"${micro / MICRO:,.6f}".rstrip("0").rstrip(".")


def transfer(
    tx: Tx,
    debit: str,
    credit: str,
    amount: int,
    kind: str,
    now: float,
    job_id: str | None = None,
    memo: str | None = None,
    guarded: bool = False,
) -> bool:
    """Move `amount` from `debit` to `credit`; with `guarded`, only if `debit` keeps at
    least zero (False, and nothing written, if not)."""
    if amount <= 0:
        return True
    if guarded:  # an account that does not exist has nothing to take
        if tx.one("debit_guarded", id=debit, amount=amount) is None:
            return False
    else:
        tx.run("move_balance", id=debit, amount=-amount, now=now)
    tx.run("move_balance", id=credit, amount=amount, now=now)
    tx.run(
        "insert_transfer",
        at=now,
        debit=debit,
        credit=credit,
        amount=amount,
        kind=kind,
        job_id=job_id,
        memo=memo,
    )
    return True


def hold(tx: Tx, job: JobRecord, terms: Terms, now: float) -> None:
    """Record a new job's terms, and hold its most cost from its owner's balance (refused,
    naming the shortfall, if that does not fit)."""
    held = terms.hold
    if held and not transfer(tx, user(job.owner), ESCROW, held, "hold", now, job.id, guarded=True):
        row = tx.one("account_balance", id=user(job.owner))
        available = int(row["balance"]) if row else 0
        raise InsufficientFunds(
            f"job {job.name} may cost up to {dollars(held)} (its prices, timeout and "
            f"replicas), which is held in escrow at submit; {job.owner} has "
            f"{dollars(available)} available, {dollars(held - available)} short",
            field="max_price",
            suggestions=[
                "ask an admin for credit: sandrun credit OWNER AMOUNT",
                "lower timeout, replicas or resources, or set max_price to cap the hold",
            ],
        )
    tx.run("set_terms", id=job.id, terms=terms.model_dump_json(), held=held)


def close(tx: Tx, job: JobRecord, now: float) -> int:
    """Settle an ended job's escrow: pay for what ran as docs/pool.md says, and give the
    rest back to its owner. Returns what the job cost."""
    row = must(tx, job.id)
    held = int(row["held"])
    terms = Terms.model_validate_json(row["terms"])
    paid = 0
    to_operators: dict[str, int] = {}
    for payout in costs.pay(terms, held, _claims(tx, job, row, terms, now)):
        to = operator(payout.operator)
        transfer(tx, ESCROW, to, payout.amount, "payment", now, job.id, payout.attempt)
        transfer(tx, ESCROW, PLATFORM, payout.fee, "fee", now, job.id, payout.attempt)
        paid += payout.amount + payout.fee
        to_operators[payout.operator] = to_operators.get(payout.operator, 0) + payout.amount
    transfer(tx, ESCROW, user(job.owner), held - paid, "refund", now, job.id)
    tx.run("close_escrow", id=job.id, cost=paid)
    if row["consensus"]:  # who was paid, beside who agreed
        outcome = json.loads(row["consensus"])
        outcome["paid"] = {k: v / MICRO for k, v in to_operators.items()}
        tx.run("set_consensus", id=job.id, consensus=json.dumps(outcome))
    return paid


Claims = list[tuple[str, str, int]]  # (operator, "JOB/ATTEMPT", micro-USD)


def _claims(tx: Tx, job: JobRecord, row: Row, terms: Terms, now: float) -> Claims:
    """What is owed for a job's work: a plain job's attempts that ran its code (not those
    its nodes lost); for a job with replicas, the agreeing ones at the least any claimed,
    or, if it was cancelled, each one for what it ran until then; else nothing."""
    if job.spec.consensus is None:
        rows = tx.all("attempts_of", job_id=job.id)
        ran = [a for a in rows if a["started_at"] is not None and a["state"] != "lost"]
        return [_owed(job.spec, terms, a, f"{job.id}/{a['number']}", now) for a in ran]
    outcome = json.loads(row["consensus"]) if row["consensus"] else {}
    replicas = {r["id"]: r for r in tx.all("replicas_of", parent=job.id)}
    ref = "{0[id]}/{0[attempts]}".format
    if outcome.get("agreeing_replicas"):
        agreeing = [replicas[i] for i in outcome["agreeing_replicas"] if i in replicas]
        return costs.least_claimed([_owed(job.spec, terms, r, ref(r), now) for r in agreeing])
    if job.state is JobState.CANCELLED:
        ran = [
            r
            for r in replicas.values()
            if r["started_at"] is not None and r["attempt_state"] != "lost"
        ]
        return [_owed(job.spec, terms, r, ref(r), now) for r in ran]
    return []


def _owed(spec: JobSpec, terms: Terms, a: Row, ref: str, now: float) -> tuple[str, str, int]:
    """One attempt's claim, to its node's operator: what its agent metered, bounded by
    what the server saw — no longer than from its claim to its end (or now, for a replica
    still running when its cancelled job ended), no more than the job reserved, and GPUs
    of the model its node registered with."""
    end = a["finished_at"] if a["finished_at"] is not None else now
    seen = max(0.0, end - a["scheduled_at"])
    metered = a["wall_seconds"] if a["wall_seconds"] is not None else seen
    gpus = spec.gpus.count if spec.gpus else 0
    node = Capacity.model_validate_json(a["node_capacity"]) if a["node_capacity"] else None
    used = Metered(
        seconds=min(float(metered), seen),
        cpus=min(float(a["cpus"] if a["cpus"] is not None else spec.cpus), spec.cpus),
        memory_mb=int(min(a["memory_mb"] or 0, spec.memory or 0)),
        gpus=min(int(a["gpus"] if a["gpus"] is not None else gpus), gpus),
        gpu_model=node.gpu_type if node else None,
    )
    return str(a["operator_key"]), ref, costs.claim(terms, used)


@dataclass(frozen=True)
class Balance:
    available: int
    held: int


def balance(tx: Tx, owner: str) -> Balance:
    account = owner if owner.startswith("operator:") else user(owner)
    row = tx.one("account_balance", id=account)
    held = tx.one("held_by_owner", owner=owner)
    return Balance(int(row["balance"]) if row else 0, int(held["held"]) if held else 0)


def check(tx: Tx) -> dict[str, Any]:
    """The ledger's invariants: every balance is the sum of its transfers, all balances
    sum to zero, no account but `world` is negative, and escrow holds exactly what the
    jobs that have not ended hold."""
    wrong = [dict(r) for r in tx.all("check_balances")]
    escrow = [dict(r) for r in tx.all("check_escrow")]
    overdrawn = [dict(r) for r in tx.all("overdrawn")]
    totals = tx.one("ledger_totals")
    assert totals is not None
    in_escrow = int(totals["escrow"] or 0)
    problems = [
        f"account {r['id']}: balance {r['balance']}, transfers {r['computed']}" for r in wrong
    ]
    problems += [
        f"job {r['id']} ({r['state']}): holds {r['held']}, its escrow nets {r['in_escrow']}"
        for r in escrow
    ]
    problems += [f"account {r['id']} is overdrawn: {r['balance']}" for r in overdrawn]
    if int(totals["total"]) != 0:
        problems.append(f"balances sum to {totals['total']}, not 0")
    if in_escrow != int(totals["held"]):
        problems.append(f"escrow holds {in_escrow}; jobs hold {totals['held']}")
    return {
        "ok": not problems,
        "problems": problems,
        "accounts": int(totals["accounts"]),
        "transfers": int(totals["transfers"]),
        "escrow": in_escrow,
    }
