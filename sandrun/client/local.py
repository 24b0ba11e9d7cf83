"""The embedded transport: the service over SQLite in this process, and a local agent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import Any

from sandrun.client.execs import ExecStream, LocalExec
from sandrun.data_models import NamedEnvironment, SecretInfo, Volume
from sandrun.embedded import ensure_agent, open_service
from sandrun.errors import ResourceNotAvailableError
from sandrun.exec_models import ExecRequest
from sandrun.home import Home
from sandrun.ids import pause
from sandrun.models import (
    Attempt,
    Checkpoint,
    Event,
    Instance,
    JobPage,
    JobRecord,
    LogChunk,
    NodeInfo,
    OutputFile,
)
from sandrun.pipeline.models import PipelineRun, PipelineStatus
from sandrun.pool.models import (
    Balance,
    CostReport,
    LedgerCheck,
    PoolNode,
    PoolStatus,
    Transfer,
)
from sandrun.retention_models import GcReport
from sandrun.service.placement import fits, has, needs
from sandrun.service.service import LOCAL_OWNER
from sandrun.spec import JobSpec
from sandrun.spec.environment import Packages
from sandrun.spec.units import parse_duration

LOG_PAGE = 1000
# The agent is another process: the store is polled, each time after `pause` (a tenth of
# the time waited so far: a short job is seen to end soon after it does; a long one costs
# little).


class EmbeddedTransport:
    embedded = True

    def __init__(self, home: Home) -> None:
        self.home = home
        self.service = open_service(home)

    def close(self) -> None:
        self.service.close()

    def submit(self, spec: JobSpec) -> JobRecord:
        """Record the job durably and make sure a local agent will run it."""
        _check_fits_here(spec)
        job = self.service.submit(spec)
        ensure_agent(self.home)
        return job

    def submit_many(self, specs: list[JobSpec]) -> list[JobRecord]:
        for spec in specs:
            _check_fits_here(spec)
        jobs = self.service.submit_many(specs)
        ensure_agent(self.home)
        return jobs

    def get(self, job_id: str) -> JobRecord:
        return self.service.get(job_id)

    def list_jobs(
        self,
        *,
        state: str | None,
        name: str | None,
        label: str | None,
        limit: int,
        cursor: str | None,
    ) -> JobPage:
        return self.service.list_jobs(
            state=state, name=name, label=label, limit=limit, cursor=cursor
        )

    def cancel(self, job_id: str) -> JobRecord:
        return self.service.cancel(job_id)

    def pause(self, job_id: str) -> JobRecord:
        return self.service.pause(job_id)

    def resume(self, job_id: str) -> JobRecord:
        return self.service.resume(job_id)

    def checkpoint(self, job_id: str) -> JobRecord:
        return self.service.checkpoint(job_id)

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        return self.service.checkpoints(job_id)

    def exec(self, job_id: str, request: ExecRequest) -> ExecStream:
        _, attempt = self.service.begin_exec(job_id, request, LOCAL_OWNER)
        record = self.home.runs / f"{job_id}.{attempt}.exec.json"
        ended = partial(self.service.end_exec, job_id, attempt, request)
        return LocalExec(record, request, on_exit=ended)

    def wait(self, job_id: str, timeout: float) -> JobRecord:
        ended = self.wait_all([job_id], timeout)
        return ended[0] if ended else self.service.get(job_id)

    def wait_all(self, ids: list[str], timeout: float) -> list[JobRecord]:
        start = time.monotonic()
        deadline = start + timeout
        wanted = len(set(ids))
        while len(ended := self.service.ended(ids)) < wanted:
            now = time.monotonic()
            if now >= deadline:
                break
            time.sleep(min(pause(now - start), deadline - now))
        return ended

    def attempts(self, job_id: str) -> list[Attempt]:
        return self.service.attempts(job_id)

    def events(self, job_id: str) -> list[Event]:
        return self.service.events(job_id)

    def logs(self, job_id: str, *, attempt: int | None) -> list[LogChunk]:
        return list(self._read(job_id, attempt, follow=False))

    def follow_logs(self, job_id: str, *, attempt: int | None) -> Iterator[LogChunk]:
        return self._read(job_id, attempt, follow=True)

    def _read(self, job_id: str, attempt: int | None, follow: bool) -> Iterator[LogChunk]:
        self.service.get(job_id)  # an unknown id fails here, not on the first page
        cursor = (0, 0)
        quiet_since = time.monotonic()
        ended = False
        while True:
            chunks = self.service.logs(job_id, attempt=attempt, after=cursor, limit=LOG_PAGE)
            yield from chunks
            if chunks:
                cursor = (chunks[-1].attempt, chunks[-1].seq)
                quiet_since = time.monotonic()
            if len(chunks) == LOG_PAGE:
                continue
            if not follow or ended:
                return
            # An agent stores all its logs before it reports the end, so one more read
            # after the job is seen to end gets the rest.
            ended = self.service.get(job_id).is_terminal
            if not ended:
                time.sleep(pause(time.monotonic() - quiet_since))

    def outputs(self, job_id: str) -> list[OutputFile]:
        return self.service.outputs(job_id)

    def read_output(self, job_id: str, path: str) -> bytes:
        return self.service.artifacts.read_bytes(self.service.output(job_id, path).digest)

    def put_blob(self, data: bytes) -> str:
        return self.service.upload(data, LOCAL_OWNER)[0]

    def has_blob(self, digest: str) -> bool:
        return self.service.blob_visible(digest, LOCAL_OWNER)

    def instances(self, min_gpu_memory_gb: float, max_price: float | None) -> list[Instance]:
        return self.service.instances(min_gpu_memory_gb, max_price)

    def why_pending(self, job_id: str) -> str | None:
        return self.service.why_pending(job_id)

    def countersignature(self, job_id: str, attempt: int) -> None:
        return None  # embedded: the agent's own signature is the only one

    def nodes(self) -> list[NodeInfo]:
        return self.service.nodes()

    # --- volumes and secrets: this machine's own owner's ------------------------------

    def create_volume(self, name: str, size: int | str | None, shared: bool) -> Volume:
        return self.service.create_volume(LOCAL_OWNER, name, size, shared)

    def volumes(self) -> list[Volume]:
        return self.service.list_volumes(LOCAL_OWNER)

    def volume(self, key: str) -> Volume:
        return self.service.get_volume(key, LOCAL_OWNER)

    def delete_volume(self, key: str) -> Volume:
        volume = self.service.delete_volume(key, LOCAL_OWNER)
        ensure_agent(self.home)  # to purge its bytes
        return volume

    def create_environment(self, name: str, spec: Packages) -> NamedEnvironment:
        return self.service.create_environment(LOCAL_OWNER, name, spec)

    def environments(self) -> list[NamedEnvironment]:
        return self.service.list_environments(LOCAL_OWNER)

    def delete_environment(self, name: str) -> None:
        self.service.delete_environment(LOCAL_OWNER, name)

    def set_secret(self, name: str, value: str) -> None:
        self.service.set_secret(LOCAL_OWNER, name, value)

    def secrets(self) -> list[SecretInfo]:
        return self.service.list_secrets(LOCAL_OWNER)

    def delete_secret(self, name: str) -> None:
        self.service.delete_secret(LOCAL_OWNER, name)

    def collect_garbage(self, older_than: float, purge_jobs: bool) -> GcReport:
        return self.service.collect_garbage(older_than, purge_jobs=purge_jobs)

    def run_pipeline(self, definition: dict[str, Any], params: dict[str, Any]) -> PipelineRun:
        """Start a run whose every step could fit this machine, and a local agent."""
        run = self.service.run_pipeline(definition, params, fits=_check_fits_here)
        ensure_agent(self.home)
        return run

    def pipeline_status(self, run_id: str) -> PipelineStatus:
        return self.service.pipeline_status(run_id)

    def pipelines(self, limit: int) -> list[PipelineRun]:
        return self.service.pipelines(limit=limit)

    def cancel_pipeline(self, run_id: str) -> PipelineRun:
        return self.service.cancel_pipeline(run_id)

    def retry_pipeline(self, run_id: str) -> PipelineRun:
        run = self.service.retry_pipeline(run_id)
        ensure_agent(self.home)
        return run

    # --- the pool: this machine's own (its one owner is `local`, an admin here) ---------

    def balance(self, owner: str | None) -> Balance:
        return self.service.balance(owner or LOCAL_OWNER)

    def credit(self, owner: str, amount: float, memo: str | None) -> Balance:
        return self.service.credit(owner, amount, memo)

    def ledger(self, job_id: str | None, account: str | None) -> list[Transfer]:
        return self.service.ledger(None, job_id=job_id, account=account)

    def ledger_check(self) -> LedgerCheck:
        return self.service.ledger_check()

    def cost_report(self, since: str, by: str) -> CostReport:
        ago = parse_duration(since)
        return self.service.cost_report(LOCAL_OWNER, self.service.clock() - ago, by)

    def pool_status(self) -> PoolStatus:
        return self.service.pool_status()

    def pool_nodes(self) -> list[PoolNode]:
        return self.service.pool_nodes()

    def set_quarantined(self, node: str, quarantined: bool) -> PoolNode:
        return self.service.set_quarantined(node, quarantined)


def _check_fits_here(spec: JobSpec) -> None:
    """Embedded jobs run on this machine: refuse one that could never fit it."""
    from sandrun.agent.capacity import detect_capacity  # not the agent itself: just this

    if spec.consensus is not None:
        raise ResourceNotAvailableError(
            "consensus: replicas must run on nodes of distinct operators, and embedded mode "
            "has one node, this machine",
            field="consensus",
            suggestions=["submit it to a pool's server (SANDRUN_URL)"],
        )
    here = detect_capacity()
    if not fits(spec, here, labels={}):  # the local node has no labels
        field = next(
            f
            for f, too_big in (
                ("cpus", spec.cpus > here.cpus),
                ("memory", (spec.memory or 0) > here.memory_mb),
                ("requires", bool(spec.requires)),
                ("gpus", True),
            )
            if too_big
        )
        raise ResourceNotAvailableError(
            f"{field}: the job needs {needs(spec)}; this machine has {has(here)}", field=field
        )
