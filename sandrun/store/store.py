"""The Store: durable jobs, the queue rules and every state change, over a `Database`.

Each public method is one transaction. State changes are checked against the one
transition table (sandrun.states) and append an event row in the same transaction.
Agent writes are fenced: they name the job, the attempt number and the attempt's token,
and are refused unless that attempt still holds the job.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sandrun.errors import (
    IllegalTransition,
    KeyInUse,
    SchemaTooNew,
    SchemaTooOld,
)
from sandrun.models import (
    Attempt,
    Capacity,
    Event,
    JobRecord,
    LogChunk,
    NodeInfo,
    OutputFile,
    Principal,
    SandboxReport,
    TokenInfo,
)
from sandrun.pool.costs import Terms
from sandrun.roles import Role
from sandrun.states import (
    JobState,
)
from sandrun.store import ledger, replicas
from sandrun.store.attempts import AttemptWrites
from sandrun.store.data import DataStore, attach
from sandrun.store.database import Database, apply_migration, load_migrations
from sandrun.store.deps import add_dependencies, cancel_job
from sandrun.store.lifecycle import LifecycleStore, start_from
from sandrun.store.pipelines import PipelineStore
from sandrun.store.pool import PoolStore
from sandrun.store.preemption import PreemptionStore
from sandrun.store.queue import PoolCache
from sandrun.store.rows import attempt_from, blobs_of, job_from, spec_columns
from sandrun.store.transitions import event, must

Listener = Callable[[str], None]  # told the kind of each committed change


class Store(AttemptWrites, PipelineStore, PoolStore, DataStore, LifecycleStore, PreemptionStore):
    """Jobs, nodes, tokens and blobs; what agents write about attempts is in
    `AttemptWrites` (store/attempts.py)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pool = PoolCache()

    # --- schema -----------------------------------------------------------------------

    def migrate(self, upgrade: bool = True) -> int:
        """Bring the schema to the version this sandrun knows and return it. A newer schema
        is refused; so is an older, non-empty one unless `upgrade` (a server does not
        change a database in use without being asked: `sandrun db upgrade`)."""
        migrations = load_migrations(self.db.dialect)
        known = migrations[-1].version if migrations else 0
        current = self.db.schema_version()
        if current > known:
            raise SchemaTooNew(
                f"the database schema is version {current}, this sandrun knows up to {known}",
                suggestions=["upgrade sandrun"],
            )
        if 0 < current < known and not upgrade:
            raise SchemaTooOld(
                f"the database schema is version {current}, this sandrun needs {known}",
                suggestions=["back the database up, then run `sandrun db upgrade --db ...`"],
            )
        for migration in migrations:
            if migration.version > current:
                apply_migration(self.db, migration)
        return known

    def schema_version(self) -> int:
        return self.db.schema_version()

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(kind)` after each committed change (other servers' too, on
        PostgreSQL)."""
        self.db.subscribe(listener)

    def close(self) -> None:
        self.db.close()

    # --- jobs -------------------------------------------------------------------------

    def insert_job(self, job: JobRecord) -> None:
        self.insert_jobs([job])

    def insert_jobs(self, jobs: list[JobRecord], terms: dict[str, Terms] | None = None) -> None:
        """Record jobs in one transaction: all of them, or none. A job with `after` waits
        for those jobs (each must exist; the service checks they are its owner's); one with
        `terms` holds its most cost in escrow (refused if its owner lacks it); one with
        `consensus` and nothing to wait for has its replicas queued."""
        with self.db.transaction() as tx:
            for job in jobs:
                spec = job.spec
                tx.run(
                    "insert_job",
                    id=job.id,
                    name=job.name,
                    owner=job.owner,
                    state=job.state.value,
                    **spec_columns(spec),
                    not_before=job.not_before,
                    created_at=job.created_at,
                )
                for digest in blobs_of(spec):
                    tx.run("insert_job_input", job_id=job.id, digest=digest)
                event(tx, job.id, None, "submitted", f"submitted as {job.name}", job.created_at)
                if spec.volumes:
                    attach(tx, job)
                if spec.restore_from is not None:
                    start_from(tx, job, spec.restore_from, job.created_at)
                if terms and job.id in terms:
                    ledger.hold(tx, job, terms[job.id], job.created_at)
                if spec.dependencies:
                    add_dependencies(tx, job, spec.dependencies, job.created_at)
                elif spec.consensus is not None:
                    replicas.start(tx, job, job.created_at)
            tx.notify("submitted")

    def get_job(self, job_id: str) -> JobRecord:
        with self.db.transaction(write=False) as tx:
            return job_from(must(tx, job_id))

    def ended_jobs(self, ids: list[str]) -> tuple[list[JobRecord], dict[str, str]]:
        """Of these jobs: those that have ended, and the owner of each that exists."""
        with self.db.transaction(write=False) as tx:
            rows = tx.all("jobs_by_ids", ids=json.dumps(ids))
        ended = [job_from(r) for r in rows if JobState(r["state"]).is_terminal]
        return ended, {r["id"]: r["owner"] for r in rows}

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        owner: str | None = None,
        name: str | None = None,
        label: tuple[str, str] | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[JobRecord]:
        with self.db.transaction(write=False) as tx:
            rows = tx.all(
                "list_jobs",
                state=state.value if state else None,
                owner=owner,
                name=name,
                label_key=label[0] if label else None,
                label_value=label[1] if label else None,
                before_created=before[0] if before else None,
                before_id=before[1] if before else None,
                limit=limit,
            )
        return [job_from(r) for r in rows]

    def request_cancel(self, job_id: str, now: float) -> JobRecord:
        """Cancel a pending job at once; flag a scheduled or running one for its agent."""
        with self.db.transaction() as tx:
            job = job_from(must(tx, job_id, lock=True))
            if job.state.is_terminal:
                raise IllegalTransition(
                    f"job {job_id} already {job.state}; there is nothing to cancel",
                    field="job_id",
                )
            cancel_job(tx, job, now)
            return job_from(must(tx, job_id))

    def next_not_before(self, now: float) -> float | None:
        """When the earliest pending job not yet eligible becomes so (a wake-up)."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("next_not_before", now=now)
        return float(row["at"]) if row and row["at"] is not None else None

    # --- reading ----------------------------------------------------------------------

    def attempts(self, job_id: str) -> list[Attempt]:
        with self.db.transaction(write=False) as tx:
            must(tx, job_id)
            return [attempt_from(r) for r in tx.all("list_attempts", job_id=job_id)]

    def live_attempts(self, node: str) -> list[Attempt]:
        with self.db.transaction(write=False) as tx:
            return [attempt_from(r) for r in tx.all("node_attempts", node=node)]

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        with self.db.transaction(write=False) as tx:
            must(tx, job_id)
            rows = tx.all("read_events", job_id=job_id, after=after, limit=limit)
        return [Event.model_validate({**r, "data": json.loads(r["data"])}) for r in rows]

    def logs(
        self,
        job_id: str,
        *,
        attempt: int | None = None,
        after: tuple[int, int] = (0, 0),
        limit: int = 1000,
    ) -> list[LogChunk]:
        with self.db.transaction(write=False) as tx:
            must(tx, job_id)
            rows = tx.all(
                "read_logs",
                job_id=job_id,
                attempt=attempt,
                after_attempt=after[0],
                after_seq=after[1],
                limit=limit,
            )
        return [LogChunk.model_validate(r) for r in rows]

    def outputs(self, job_id: str, attempt: int | None = None) -> list[OutputFile]:
        with self.db.transaction(write=False) as tx:
            must(tx, job_id)
            rows = tx.all("list_outputs", job_id=job_id, attempt=attempt)
        return [OutputFile.model_validate(r) for r in rows]

    # --- nodes ------------------------------------------------------------------------

    def register_node(
        self,
        node_id: str,
        name: str,
        capacity: Capacity,
        labels: dict[str, str],
        now: float,
        sandbox: SandboxReport | None = None,
        public_key: str | None = None,
        detected: Capacity | None = None,
        operator: str | None = None,
    ) -> None:
        with self.db.transaction() as tx:
            if public_key is not None:
                bound = tx.one("worker_key", public_key=public_key)
                if bound is not None and bound["node_name"] != name:
                    raise KeyInUse(
                        f"worker key {public_key[:16]}... belongs to node "
                        f"{bound['node_name']!r}; a node registers its own key",
                        field="public_key",
                        suggestions=["give each agent its own work directory (identity.key)"],
                    )
                tx.run("insert_worker_key", public_key=public_key, node_name=name, now=now)
            tx.run(
                "upsert_node",
                public_key=public_key,
                detected=detected.model_dump_json() if detected else None,
                id=node_id,
                name=name,
                labels=json.dumps(labels),
                capacity=capacity.model_dump_json(),
                now=now,
                sandbox=sandbox.model_dump_json() if sandbox else None,
                operator=operator,
            )

    def node_identity(self, node_id: str) -> tuple[str | None, dict[str, str]] | None:
        """The operator who registered `node_id` (None: an embedded node, or one from before
        operators were kept) and its labels; None for a node never registered."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("node_identity", id=node_id)
        return (row["operator"], json.loads(row["labels"])) if row else None

    def queue_position(self, job: JobRecord) -> int:
        """How many pending jobs would be claimed before `job` (0: it is next)."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("queue_position", priority=job.priority, created_at=job.created_at)
        return int(row["ahead"]) if row else 0

    def owner_usage(self, owner: str, now: float) -> tuple[int, int, float]:
        """`owner`'s jobs queued or running, jobs submitted in the last hour, and CPU
        seconds used by attempts that ended in the last minute."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("owner_usage", owner=owner, hour_ago=now - 3600, minute_ago=now - 60)
        assert row is not None
        return int(row["active"]), int(row["last_hour"]), float(row["cpu_last_minute"])

    def owner_load(self, owner: str) -> tuple[int, int]:
        """The jobs `owner` has scheduled or running, and the GPUs they hold."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("running_load", owners=json.dumps([owner]))
        return (int(row["jobs"]), int(row["gpus"])) if row else (0, 0)

    def reserved_node(self, job_id: str) -> str | None:
        """The node keeping itself free for this pending job, if one is."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("job_reservation", id=job_id)
        return row["reserved_node"] if row else None

    def queue_length(self) -> tuple[int, int]:
        """Jobs waiting (pending or scheduled) and running, all owners."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("queue_length")
        assert row is not None
        return int(row["queued"]), int(row["running"])

    def signer_key(self, job_id: str, number: int) -> str | None:
        """The key the node running this attempt registered to sign results with, if any."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("signer_key", job_id=job_id, number=number)
        return row["public_key"] if row else None

    def node_heartbeat_at(self, node_id: str) -> float:
        """When `node_id` last heartbeated; 0 for a node never registered."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("node_heartbeat_at", id=node_id)
        return float(row["heartbeat_at"]) if row else 0.0

    def nodes(self) -> list[NodeInfo]:
        with self.db.transaction(write=False) as tx:
            rows = tx.all("list_nodes")
        return [
            NodeInfo.model_validate(
                {
                    **r,
                    "labels": json.loads(r["labels"]),
                    "capacity": json.loads(r["capacity"]),
                    "sandbox": json.loads(r["sandbox"]) if r["sandbox"] else None,
                    "detected": json.loads(r["detected"]) if r["detected"] else None,
                    "warm": json.loads(r["warm"]) if r["warm"] else None,
                    "used_memory_mb": int(r["used_memory_mb"]),
                }
            )
            for r in rows
        ]

    def extend_live_leases(self, until: float) -> None:
        """Give every live attempt's agent until `until` to report (after a server restart)."""
        with self.db.transaction() as tx:
            tx.run("extend_live_leases", until=until)

    # --- tokens -----------------------------------------------------------------------

    def insert_token(self, token_id: str, name: str, role: Role, digest: str, now: float) -> None:
        with self.db.transaction() as tx:
            tx.run("insert_token", id=token_id, name=name, role=role.value, hash=digest, now=now)

    def principal_by_hash(self, digest: str) -> Principal | None:
        """The holder of the unrevoked token with this hash, if there is one."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("token_by_hash", hash=digest)
        return Principal(name=row["name"], role=Role(row["role"])) if row else None

    def tokens(self) -> list[TokenInfo]:
        with self.db.transaction(write=False) as tx:
            return [TokenInfo.model_validate(r) for r in tx.all("list_tokens")]

    def revoke_tokens(self, key: str, now: float) -> int:
        """Revoke the token with this id, or every token of this name; return how many."""
        with self.db.transaction() as tx:
            return tx.run("revoke_tokens", key=key, now=now)

    # --- blobs ------------------------------------------------------------------------

    def add_blob_owner(self, digest: str, owner: str) -> None:
        with self.db.transaction() as tx:
            tx.run("insert_blob_owner", digest=digest, owner=owner)

    def forget_blob(self, digest: str) -> None:
        """The blob is gone: nobody owns it any more."""
        with self.db.transaction() as tx:
            tx.run("delete_blob_owners", digest=digest)

    def blob_visible(self, digest: str, owner: str) -> bool:
        """Whether `owner` uploaded this blob, or has a job that produced or uses it."""
        with self.db.transaction(write=False) as tx:
            return tx.one("blob_visible", digest=digest, owner=owner) is not None
