"""The claim: which pending job a node takes next, inside the claim's transaction.

Order: priority first; then fair share between owners — the owner whose running jobs hold
the smallest dominant share of the pool (its largest fraction of the pool's CPUs, memory or
GPUs, as in Dominant Resource Fairness) goes first; then age.

Limits (the server's policy): an owner at `max_running_jobs` waits; an owner near
`max_gpus` only gets jobs within what it has left.

Reservations: when the first job in that order fits this node but not the room it has free
now, and has waited `reserve_after` seconds, the node keeps itself for that job — it takes
only jobs that will still fit beside it once everything else on the node ends (backfill) —
until the job starts. So a stream of small jobs cannot starve a big one. A node holds one
reservation at a time; a node that stops heartbeating loses it to the next node that asks.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from sandrun.models import Capacity
from sandrun.spec.policy import Policy
from sandrun.store.database import Row, Tx
from sandrun.store.transitions import event


@dataclass(frozen=True)
class Load:
    """What an owner's scheduled and running jobs hold."""

    jobs: int = 0
    cpus: float = 0.0
    memory_mb: float = 0.0
    gpus: int = 0


@dataclass(frozen=True)
class Head:
    """An owner's first pending job (in claim order) that fits the room asked about."""

    id: str
    owner: str
    priority: int
    created_at: float
    cpus: float
    memory_mb: int
    gpu_count: int
    reserved_node: str | None
    reserved_at: float | None
    reserver_seen: float | None  # the reserving node's last heartbeat
    replica_of: str | None = None  # a replica: claimed by the query that knows the rule

    def fits(self, room: Capacity) -> bool:
        # Model, GPU memory and labels were matched by the query: they are the node's.
        return room.holds(self.cpus, self.memory_mb, self.gpu_count)


def share(load: Load, pool: Load) -> float:
    """An owner's dominant share: its largest fraction of any resource in the pool."""
    parts = [
        load.cpus / pool.cpus if pool.cpus else 0.0,
        load.memory_mb / pool.memory_mb if pool.memory_mb else 0.0,
        load.gpus / pool.gpus if pool.gpus else 0.0,
    ]
    return max(parts)


def fair_order(heads: list[Head], loads: dict[str, Load], pool: Load) -> list[Head]:
    """Priority, then the owner with the smallest share of the pool, then age."""
    return sorted(
        heads,
        key=lambda h: (-h.priority, share(loads.get(h.owner, Load()), pool), h.created_at, h.id),
    )


def backfill_room(capacity: Capacity, free: Capacity, reserved: Head, since: Load) -> Capacity:
    """The room a node keeping itself for `reserved` may still fill: whatever it starts must
    fit beside that job (with what it started since reserving) once the node drains."""
    beside = {
        "cpus": capacity.cpus - reserved.cpus - since.cpus,
        "memory_mb": int(capacity.memory_mb - reserved.memory_mb - since.memory_mb),
        "gpus": capacity.gpus - reserved.gpu_count - since.gpus,
    }
    return free.model_copy(
        update={key: max(0, min(getattr(free, key), left)) for key, left in beside.items()}
    )


def within(room: Capacity, gpus_left: int | None) -> Capacity:
    """`room` with its GPUs capped by what an owner may still take (None: no cap)."""
    if gpus_left is None or gpus_left >= room.gpus:
        return room
    return room.model_copy(update={"gpus": max(gpus_left, 0)})


@dataclass(frozen=True)
class Allowance:
    """What an owner's limits let it start now."""

    blocked: bool = False  # at max_running_jobs, or busy
    gpus_left: int | None = None  # under max_gpus; None: no GPU limit
    busy: bool = False  # another claim for this owner is under way: skip it this time


class PoolCache:
    """What the live nodes have together, the denominator of every share: summed from
    each node's JSON capacity (milliseconds with a thousand nodes), so kept a few seconds."""

    TTL = 5.0

    def __init__(self) -> None:
        self._at = -self.TTL
        self._pool = Load()
        self._lock = threading.Lock()

    def get(self, tx: Tx, live_since: float) -> Load:
        with self._lock:
            if time.monotonic() - self._at < self.TTL:
                return self._pool
        row = tx.one("pool_capacity", live_since=live_since)
        assert row is not None
        pool = Load(0, float(row["cpus"]), float(row["memory_mb"]), int(row["gpus"]))
        with self._lock:
            self._pool, self._at = pool, time.monotonic()
        return pool


class Claimer:
    """One claim by one node: reads what it needs, then takes at most one job."""

    def __init__(
        self,
        tx: Tx,
        node: str,
        free: Capacity,
        policy: Policy,
        *,
        now: float,
        lease_seconds: float,
        token: str,
        pool: PoolCache,
        claim_key: str | None = None,
    ) -> None:
        self.tx = tx
        self.pool = pool
        self.node = node
        self.free = free
        self.policy = policy
        self.now = now
        self.live_since = now - lease_seconds
        self.write = {
            "now": now,
            "node": node,
            "token": token,
            "lease_expires_at": now + lease_seconds,
            "claim_key": claim_key,
        }
        row = tx.one("node_capacity", node=node)
        self.capacity = Capacity.model_validate_json(row["capacity"]) if row else free
        self.operator = row["operator_key"] if row else node
        self.quarantined = bool(row["quarantined"]) if row else False
        self.reputable = bool(row and (row["streak"] or 0) >= policy.pool.trust_streak)
        self.loads: dict[str, Load] = {}
        self.allowances: dict[str, Allowance] = {}

    def claim(self) -> Row | None:
        if self.quarantined:
            return None  # until an admin releases it (docs/pool.md)
        room = self.free
        held = self._held()
        if held is not None:
            allowance = self._allowance(held.owner)
            if not allowance.blocked and held.fits(within(self.free, allowance.gpus_left)):
                return self.tx.one("claim_reserved", job=held.id, **self.write)
            room = self._backfill(held)
        # Without a reservation, ask what fits the whole node: a job first in order that
        # does not fit the free room is the one to reserve for.
        heads = self._heads(room if held is not None else self.capacity)
        if not heads:
            return None
        if len(heads) > 1 or self.policy.limited:
            self.loads = self._load([h.owner for h in heads])
        pool = self.pool.get(self.tx, self.live_since) if len(heads) > 1 else Load()
        for head in fair_order(heads, self.loads, pool):
            allowance = self._allowance(head.owner)
            if allowance.blocked:
                continue
            if held is None and not head.fits(room) and self._reservable(head, allowance):
                held = self._reserve(head)
                if held is not None:
                    room = self._backfill(held)
            mine = within(room, allowance.gpus_left)
            query = "claim_replica" if head.replica_of else "claim_job"
            row = self.tx.one(query, owner=head.owner, **self._room(mine), **self.write)
            if row is not None:
                return row
        return None

    # --- reservations -------------------------------------------------------------------

    def _held(self) -> Head | None:
        """This node's reservation, while its job waits and may still start here."""
        row = self.tx.one("reservation", node=self.node)
        if row is None:
            return None
        head = Head(**row, reserver_seen=self.now)
        allowance = self._allowance(head.owner)
        startable = not allowance.blocked and (
            allowance.gpus_left is None or head.gpu_count <= allowance.gpus_left
        )
        if allowance.busy or (startable and head.fits(self.capacity)):
            return head
        self.tx.run("release_reservation", job=head.id)
        self.tx.notify("submitted")  # other nodes may take it now: wake their polls
        return None

    def _reservable(self, head: Head, allowance: Allowance) -> bool:
        after = self.policy.reserve_after
        if after is None or self.now - head.created_at < after or head.replica_of:
            return False  # (a replica may not be this node's operator's to take)
        if allowance.gpus_left is not None and head.gpu_count > allowance.gpus_left:
            return False  # its owner could not start it anyway
        if head.reserved_node in (None, self.node):
            return True
        return head.reserver_seen is None or head.reserver_seen < self.live_since

    def _reserve(self, head: Head) -> Head | None:
        if not self.tx.run("reserve_job", job=head.id, live_since=self.live_since, **self.write):
            return None
        event(self.tx, head.id, None, "reserved", f"node {self.node} is kept for it", self.now)
        return replace(head, reserved_node=self.node, reserved_at=self.now)

    def _backfill(self, held: Head) -> Capacity:
        row = self.tx.one("backfilled", node=self.node, since=held.reserved_at)
        assert row is not None
        since = Load(0, float(row["cpus"]), float(row["memory_mb"]), int(row["gpus"]))
        return backfill_room(self.capacity, self.free, held, since)

    # --- what the claim reads -----------------------------------------------------------

    def _heads(self, room: Capacity) -> list[Head]:
        rows = self.tx.all("queue_heads", now=self.now, node=self.node, **self._room(room))
        return [Head(**r) for r in rows]

    def _load(self, owners: list[str]) -> dict[str, Load]:
        rows = self.tx.all("running_load", owners=json.dumps(owners))
        return {
            r["owner"]: Load(
                int(r["jobs"]), float(r["cpus"]), float(r["memory_mb"]), int(r["gpus"])
            )
            for r in rows
        }

    def _allowance(self, owner: str) -> Allowance:
        if owner not in self.allowances:
            self.allowances[owner] = self._count_allowance(owner)
        return self.allowances[owner]

    def _count_allowance(self, owner: str) -> Allowance:
        """With a limit, one claim at a time may start the owner's jobs: it holds a lock
        until it commits and counts the owner's load again under it, so concurrent claims
        (and servers) cannot overshoot. A claim that finds the lock taken skips the owner
        (as SKIP LOCKED skips rows): no claim waits for another, none can deadlock."""
        limits = self.policy.limits_for(owner)
        if not limits.any:
            return Allowance()
        locked = self.tx.one("lock_owner", owner=owner)
        if locked is None or not locked["locked"]:
            return Allowance(blocked=True, busy=True)
        load = self._load([owner]).get(owner, Load())
        self.loads[owner] = load
        if limits.max_running_jobs is not None and load.jobs >= limits.max_running_jobs:
            return Allowance(blocked=True)
        if limits.max_gpus is None:
            return Allowance()
        return Allowance(gpus_left=limits.max_gpus - load.gpus)

    def _room(self, room: Capacity) -> dict[str, Any]:
        return {
            "cpus": room.cpus,
            "memory_mb": room.memory_mb,
            "gpus": room.gpus,
            "gpu_type": room.gpu_type,
            "gpu_memory_gb": room.gpu_memory_gb,
            "operator": self.operator,
            "reputable": int(self.reputable),
            "trusted_until": self.now - self.policy.pool.prefer_trusted_for,
        }
