"""A pool run by hand, as its agents would: nodes of named operators, each claiming and
reporting the result the test chooses (an honest one, or a cheat's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandrun.artifacts import LocalArtifactStore
from sandrun.models import AttemptResult, Capacity, JobRecord, OutputFile, Usage
from sandrun.service import Service
from sandrun.spec.policy import Policy
from sandrun.spec.pricing import PoolPolicy
from sandrun.store import Store
from tests.contract.flow import Clock

ROOM = Capacity(cpus=8, memory_mb=16384)


def pool_service(store: Store, root: Path, **pool: Any) -> Service:
    policy = Policy(pool=PoolPolicy(**pool))
    return Service(store, LocalArtifactStore(root / "blobs"), clock=Clock(), policy=policy)


def add_nodes(service: Service, *names: str, operator: str | None = None) -> None:
    """Nodes called `names`, each its own operator's unless `operator` is given."""
    for name in names:
        service.store.register_node(
            name, name, ROOM, {}, service.clock(), operator=operator or f"op-{name}"
        )


def run_on(
    service: Service,
    node: str,
    data: bytes = b"42\n",
    *,
    exit_code: int = 0,
    seconds: float = 1.0,
    reason: str | None = None,
) -> JobRecord | None:
    """`node` claims the next job it may take and reports `data` as its output `out`;
    None if it may take none."""
    got = service.claim(node, ROOM)  # under the service's policy
    if got is None:
        return None
    service.store.start_attempt(got.job.id, got.attempt, got.token, service.clock())
    service.clock.now += seconds  # type: ignore[attr-defined]  # it ran that long
    digest, size = service.artifacts.put_bytes(data)
    result = AttemptResult.model_validate(
        {
            "exit_code": exit_code,
            "failure_reason": reason,
            "outputs": [OutputFile(attempt=got.attempt, path="out", digest=digest, size=size)],
            "usage": Usage(
                wall_seconds=seconds, cpus=got.job.spec.cpus, memory_mb=got.job.spec.memory
            ),
        }
    )
    service.store.finish_attempt(
        got.job.id, got.attempt, got.token, result, service.decide, service.clock()
    )
    return got.job


def consensus_job(service: Service, consensus: object, owner: str = "alice", **more: Any) -> str:
    spec = {"shell": "echo 42 > out", "outputs": ["out"], "consensus": consensus, **more}
    return service.submit(spec, owner).id
