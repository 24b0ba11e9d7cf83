"""Checking a job's result against its agent's signature (`sandrun verify`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from sandrun.client.client import Client
from sandrun.models import Attempt
from sandrun.signing import countersign_claim, meter_claim, result_claim, verify


@dataclass
class Verdict:
    job_id: str
    attempt: int | None = None
    worker_id: str | None = None
    server_id: str | None = None  # the server that countersigned it (None: embedded)
    exit_code: int | None = None
    outputs: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_result(
    client: Client,
    job_id: str,
    directory: Path | None = None,
    worker: str | None = None,
    server: str | None = None,
) -> Verdict:
    """Whether the job's result — its exit code and outputs, read from the server or from
    `directory` where they were downloaded — is what its agent signed, countersigned by
    the server that took it (and, with `worker` or `server`, by the keys expected)."""
    job = client.get(job_id)
    outcome = job.record.consensus
    agreeing = outcome.get("agreeing_replicas") if isinstance(outcome, dict) else None
    if isinstance(agreeing, list) and agreeing:
        job = client.get(str(agreeing[0]))  # its result is an agreeing replica's
    verdict = Verdict(job.id)
    outputs = job.outputs
    ended = [a for a in job.attempts if a.finished_at is not None]
    number = outputs[0].attempt if outputs else (ended[-1].number if ended else None)
    attempt = next((a for a in ended if a.number == number), None)
    if attempt is None:
        verdict.problems.append(f"job {job.id} has no finished attempt")
        return verdict
    verdict.attempt, verdict.worker_id = attempt.number, attempt.worker_id
    verdict.exit_code, verdict.outputs = attempt.exit_code, len(outputs)
    if attempt.signature is None or attempt.worker_id is None:
        verdict.problems.append(f"attempt {attempt.number} is not signed (its agent has no key)")
        return verdict
    if worker is not None and attempt.worker_id != worker:
        verdict.problems.append(f"it was signed by {attempt.worker_id}, not by {worker}")
    digests = {}
    for out in outputs:
        if directory is None:
            data = job.read_bytes(out.path)
        elif (directory / out.path).is_file():
            data = (directory / out.path).read_bytes()
        else:
            verdict.problems.append(f"{out.path} is missing from {directory}")
            continue
        digests[out.path] = hashlib.sha256(data).hexdigest()
        if digests[out.path] != out.digest:
            verdict.problems.append(f"{out.path} is not the file its agent signed")
    claim = result_claim(job.id, attempt.number, job.record.spec, attempt.exit_code, digests)
    if not verdict.problems and not verify(attempt.worker_id, claim, attempt.signature):
        verdict.problems.append("the signature does not match the job, its exit code or outputs")
    _check_countersignature(client, verdict, attempt, server)
    metered = meter_claim(job.id, attempt.number, attempt.usage, attempt.stdout_sha256)
    if attempt.meter_signature and metered is not None:
        if not verify(attempt.worker_id, metered, attempt.meter_signature):
            verdict.problems.append("what it held (its metering) is not what its agent signed")
    return verdict


def _check_countersignature(
    client: Client, verdict: Verdict, attempt: Attempt, server: str | None
) -> None:
    assert attempt.signature is not None and attempt.worker_id is not None
    counter = client.transport.countersignature(verdict.job_id, attempt.number)
    if counter is None:
        if server is not None:
            verdict.problems.append("no server countersigned it (an embedded result)")
        return
    verdict.server_id = counter.server_id
    claim = countersign_claim(verdict.job_id, attempt.number, attempt.worker_id, attempt.signature)
    if counter.countersignature is None or not verify(
        counter.server_id, claim, counter.countersignature
    ):
        verdict.problems.append(
            f"the server's countersignature does not verify ({counter.server_id})"
        )
    if server is not None and counter.server_id != server:
        verdict.problems.append(f"it was countersigned by {counter.server_id}, not by {server}")
