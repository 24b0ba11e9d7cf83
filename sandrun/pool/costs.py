"""What work costs and who is paid, in integer micro-USD.

A job's *terms* are fixed when it is accepted (prices can change while it runs): the
prices, its multiplier, the platform's fee and the escrow it holds. An attempt's *claim*
is what its metered use costs under them. `payouts` says, when a job ends, what each
node's operator is paid, by the policy docs/pool.md writes down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from sandrun.spec import JobSpec
from sandrun.spec.pricing import PoolPolicy, Prices

MICRO = 1_000_000  # micro-USD in a dollar


class Terms(BaseModel):
    """The pool's terms for one job, stored with it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prices: Prices
    multiplier: float = 1.0
    fee: float = 0.0
    hold: int = 0  # micro-USD held in escrow at submit (0: the ledger is off)
    trust_streak: int = 10
    spot_check: float = 0.1
    quarantine_after: int = 3
    quarantine_ratio: float = 0.5


@dataclass(frozen=True)
class Metered:
    """What one attempt held and for how long (the agent's signed usage)."""

    seconds: float
    cpus: float
    memory_mb: int
    gpus: int = 0
    gpu_model: str | None = None


def claim(terms: Terms, used: Metered) -> int:
    """What an attempt's use costs, in micro-USD (rounded up: a started micro is owed)."""
    prices = terms.prices
    per_second = used.cpus * prices.cpu_second
    if used.gpus:
        per_second += used.gpus * prices.gpu(used.gpu_model)
    dollars = per_second * max(used.seconds, 0.0) + used.memory_mb * prices.memory_mb
    return math.ceil(dollars * terms.multiplier * MICRO - 1e-6)


def replicas_held(spec: JobSpec) -> int:
    """How many runs a job's escrow covers: its replicas (two for a spot-checked `low`
    job), each with its retries."""
    n = 1
    if spec.consensus is not None:
        n = max(spec.consensus.n, 2 if spec.consensus.adaptive else spec.consensus.n)
    return n * spec.retries.max_attempts


def terms_for(spec: JobSpec, pool: PoolPolicy) -> Terms:
    """A job's terms under `pool`, its hold the most it can cost (timeout set)."""
    terms = Terms(
        prices=pool.prices,
        multiplier=pool.prices.priority_multiplier if spec.priority > 0 else 1.0,
        fee=pool.fee,
        trust_streak=pool.trust_streak,
        spot_check=pool.spot_check,
        quarantine_after=pool.quarantine_after,
        quarantine_ratio=pool.quarantine_ratio,
    )
    if not pool.ledger:
        return terms
    return terms.model_copy(update={"hold": most(spec, terms)})


def most(spec: JobSpec, terms: Terms) -> int:
    """The most `spec` can cost: every run it may make, each for its whole timeout."""
    return claim(terms, _metered(spec, float(spec.timeout or 0))) * replicas_held(spec)


def fitting_timeout(spec: JobSpec, terms: Terms, cap: int) -> float | None:
    """The longest timeout under which `spec` costs at most `cap` micro-USD (None: not
    even one second fits)."""
    runs = replicas_held(spec)
    fixed = claim(terms, _metered(spec, 0.0))
    per_second = claim(terms, _metered(spec, 1.0)) - fixed
    room = cap // runs - fixed
    if room < per_second:
        return None
    return float(room // per_second) if per_second else float(spec.timeout or 0)


def _metered(spec: JobSpec, seconds: float) -> Metered:
    gpus = spec.gpus.count if spec.gpus else 0
    model = spec.gpus.types[0] if spec.gpus and len(spec.gpus.types) == 1 else None
    return Metered(seconds, spec.cpus, spec.memory or 0, gpus, model)


@dataclass(frozen=True)
class Payout:
    """One payment out of a job's escrow."""

    operator: str
    amount: int  # to the operator, after the fee
    fee: int  # to the platform
    attempt: str  # "JOB_ID/N": the attempt it pays for


def pay(terms: Terms, held: int, claims: Sequence[tuple[str, str, int]]) -> list[Payout]:
    """Pay `claims` ((operator, attempt, amount) in order) out of `held` micro-USD: each in
    full while the escrow lasts, the last in part; the fee is the platform's part of each."""
    out = []
    for operator, attempt, amount in claims:
        amount = min(amount, held)
        if amount <= 0:
            break
        held -= amount
        fee = math.floor(amount * terms.fee)
        out.append(Payout(operator, amount - fee, fee, attempt))
    return out


def least_claimed(claims: Sequence[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """BOINC's rule for agreeing replicas: each is paid the least any of them claimed."""
    if not claims:
        return []
    least = min(amount for _, _, amount in claims)
    return [(operator, attempt, least) for operator, attempt, _ in claims]
