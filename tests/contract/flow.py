"""Running a store's jobs by hand, as an agent would: claim, start, report an end with
outputs stored first. Each job's outcome is chosen by the test."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandrun.artifacts import LocalArtifactStore
from sandrun.models import AttemptResult, Capacity, JobRecord, OutputFile
from sandrun.service import Service
from sandrun.store import Store

BIG = Capacity(cpus=64, memory_mb=1 << 20, gpus=8, gpu_type="a100", gpu_memory_gb=80)


@dataclass
class Outcome:
    exit_code: int = 0
    outputs: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def result(cls, value: Any, path: str = "result.json") -> Outcome:
        return cls(outputs={path: json.dumps(value).encode()})


Decider = Callable[[JobRecord], Outcome]


def service_over(store: Store, root: Path) -> Service:
    return Service(store, LocalArtifactStore(root / "blobs"), clock=Clock())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def run_queued(service: Service, outcome: Decider = lambda job: Outcome()) -> list[JobRecord]:
    """Run every job that is or becomes pending, each ending as `outcome` says; return
    them in the order they ran."""
    ran = []
    while (job := run_next(service, outcome)) is not None:
        ran.append(job)
    return ran


def run_next(service: Service, outcome: Decider = lambda job: Outcome()) -> JobRecord | None:
    """Run the next pending job, ending as `outcome` says; None if none is pending."""
    got = service.store.claim("node-a", BIG, service.clock(), 30.0)
    if got is None:
        return None
    job = got.job
    service.store.start_attempt(job.id, got.attempt, got.token, service.clock())
    chosen = outcome(job)
    files = []
    for path, data in chosen.outputs.items():
        digest, size = service.artifacts.put_bytes(data)
        files.append(OutputFile(attempt=got.attempt, path=path, digest=digest, size=size))
    result = AttemptResult(exit_code=chosen.exit_code, outputs=files)
    service.store.finish_attempt(
        job.id, got.attempt, got.token, result, service.decide, service.clock()
    )
    return job
