"""Turning database rows into the wire models."""

from __future__ import annotations

import functools
import json
from typing import Any

from sandrun.models import Attempt, JobRecord, Usage
from sandrun.pool.costs import MICRO
from sandrun.spec import JobSpec
from sandrun.spec.base import STORED
from sandrun.states import AttemptState, JobState
from sandrun.store.database import Row

_SPEC_CACHED_BELOW = 4096  # bytes of JSON: a cached spec is a small one


def job_from(row: Row) -> JobRecord:
    # The stored context also reaches the spec, which the record validates again.
    return JobRecord.model_validate(
        dict(
            id=row["id"],
            name=row["name"],
            owner=row["owner"],
            state=JobState(row["state"]),
            spec=_spec(row["spec"])
            if len(row["spec"]) < _SPEC_CACHED_BELOW
            else _parse(row["spec"]),
            priority=row["priority"],
            attempts=row["attempts"],
            exit_code=row["exit_code"],
            failure_reason=row["failure_reason"],
            message=row["message"],
            cancel_requested=bool(row["cancel_requested"]),
            not_before=row["not_before"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            retries_used=row["retries_used"],
            infra_retries=row["infra_retries"],
            pipeline_id=row["pipeline_id"],
            step=row["step"],
            item=row["item"],
            result=json.loads(row["result"]) if row["result"] is not None else None,
            cached_from=row["cached_from"],
            waited_on=bool(row["waited_on"]),
            replica_of=row["replica_of"],
            replica=row["replica"],
            consensus=json.loads(row["consensus"]) if row["consensus"] else None,
            cost=row["cost"] / MICRO if row["cost"] is not None else None,
            held=row["held"] / MICRO,
            checkpoint=row["checkpoint"],
            checkpoint_requested_at=row["checkpoint_requested_at"],
            preemptions=row["preemptions"],
        ),
        context=STORED,
    )


def blobs_of(spec: JobSpec) -> set[str]:
    """The blobs a job brings (kept while it refers to them): inputs, code, data mounts."""
    mounted = {m.digest for m in spec.data_mounts if m.digest is not None}
    return {*spec.inputs.values(), *([spec.code] if spec.code else []), *mounted}


def spec_columns(spec: JobSpec) -> dict[str, Any]:
    """A job row's columns that come from its spec (the claim's SQL reads them)."""
    return dict(
        spec=json.dumps(spec.to_json_dict()),
        labels=json.dumps(spec.labels),
        requires=json.dumps(spec.requires, sort_keys=True),
        priority=spec.priority,
        cpus=spec.cpus,
        memory_mb=spec.memory or 0,
        gpu_count=spec.gpus.count if spec.gpus else 0,
        gpu_type=",".join(spec.gpus.types) or None if spec.gpus else None,
        gpu_memory_gb=(spec.gpus.memory_gb or 0) if spec.gpus else 0,
    )


def _parse(text: str) -> JobSpec:
    return JobSpec.model_validate_json(text, context=STORED)


# A job's row is read several times in its life (claim, start, end), and many jobs share a
# spec (an array, a map): validating it again costs more than the rest of the row. Specs
# are frozen, so one parsed spec may be shared.
_spec = functools.lru_cache(maxsize=1024)(_parse)


def attempt_from(row: Row) -> Attempt:
    return Attempt(
        job_id=row["job_id"],
        number=row["number"],
        state=AttemptState(row["state"]),
        node=row["node"],
        lease_expires_at=row["lease_expires_at"],
        pid=row["pid"],
        pid_started_at=row["pid_started_at"],
        scheduled_at=row["scheduled_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        exit_code=row["exit_code"],
        failure_reason=row["failure_reason"],
        message=row["message"],
        git_commit=row["git_commit"],
        worker_id=row["worker_id"],
        signature=row["signature"],
        stdout_sha256=row["stdout_sha256"],
        meter_signature=row["meter_signature"],
        usage=Usage(
            wall_seconds=row["wall_seconds"],
            cpu_seconds=row["cpu_seconds"],
            max_rss_mb=row["max_rss_mb"],
            cpus=row["cpus"],
            memory_mb=row["memory_mb"],
            gpus=row["gpus"],
            gpu_model=row["gpu_model"],
        ),
    )
