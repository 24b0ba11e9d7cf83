"""How the SDK reaches sandrun: in-process (embedded) or over HTTP. Same methods either way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from sandrun.client.execs import ExecStream
from sandrun.data_models import NamedEnvironment, SecretInfo, Volume
from sandrun.exec_models import ExecRequest
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
    Countersignature,
    LedgerCheck,
    PoolNode,
    PoolStatus,
    Transfer,
)
from sandrun.retention_models import GcReport
from sandrun.spec import JobSpec
from sandrun.spec.environment import Packages


class Transport(Protocol):
    embedded: bool  # True when jobs run on this machine (the CLI then defaults to the cwd)

    def submit(self, spec: JobSpec) -> JobRecord: ...

    def submit_many(self, specs: list[JobSpec]) -> list[JobRecord]:
        """All recorded, in this order, or none (at most MAX_BATCH)."""
        ...

    def get(self, job_id: str) -> JobRecord: ...

    def list_jobs(
        self,
        *,
        state: str | None,
        name: str | None,
        label: str | None,
        limit: int,
        cursor: str | None,
    ) -> JobPage: ...

    def cancel(self, job_id: str) -> JobRecord: ...

    def pause(self, job_id: str) -> JobRecord: ...

    def resume(self, job_id: str) -> JobRecord: ...

    def checkpoint(self, job_id: str) -> JobRecord: ...

    def checkpoints(self, job_id: str) -> list[Checkpoint]: ...

    def exec(self, job_id: str, request: ExecRequest) -> ExecStream:
        """Start `request` inside the running job."""
        ...

    def wait(self, job_id: str, timeout: float) -> JobRecord:
        """The job once it has ended, or as it is after about `timeout` seconds."""
        ...

    def wait_all(self, ids: list[str], timeout: float) -> list[JobRecord]:
        """The jobs `ids` (at most MAX_BATCH) once all have ended, or after about
        `timeout` seconds those that have."""
        ...

    def attempts(self, job_id: str) -> list[Attempt]: ...

    def events(self, job_id: str) -> list[Event]: ...

    def logs(self, job_id: str, *, attempt: int | None) -> list[LogChunk]:
        """Everything logged so far."""
        ...

    def follow_logs(self, job_id: str, *, attempt: int | None) -> Iterator[LogChunk]:
        """Chunks as they come, ending once the job has ended and all are read."""
        ...

    def outputs(self, job_id: str) -> list[OutputFile]: ...

    def read_output(self, job_id: str, path: str) -> bytes: ...

    def put_blob(self, data: bytes) -> str:
        """Store bytes a job will bring (code, arguments); return their sha256."""
        ...

    def has_blob(self, digest: str) -> bool: ...

    def nodes(self) -> list[NodeInfo]: ...

    def why_pending(self, job_id: str) -> str | None: ...

    def countersignature(self, job_id: str, attempt: int) -> Countersignature | None:
        """The server's countersignature over an attempt's result (None: no server)."""

    def instances(self, min_gpu_memory_gb: float, max_price: float | None) -> list[Instance]: ...

    def collect_garbage(self, older_than: float, purge_jobs: bool) -> GcReport: ...

    def run_pipeline(self, definition: dict[str, Any], params: dict[str, Any]) -> PipelineRun: ...

    def pipeline_status(self, run_id: str) -> PipelineStatus: ...

    def pipelines(self, limit: int) -> list[PipelineRun]: ...

    def cancel_pipeline(self, run_id: str) -> PipelineRun: ...

    def retry_pipeline(self, run_id: str) -> PipelineRun: ...

    # The pool (docs/pool.md): `owner` None is the caller.
    def balance(self, owner: str | None) -> Balance: ...

    def credit(self, owner: str, amount: float, memo: str | None) -> Balance: ...

    def ledger(self, job_id: str | None, account: str | None) -> list[Transfer]: ...

    def ledger_check(self) -> LedgerCheck: ...

    def cost_report(self, since: str, by: str) -> CostReport: ...

    def pool_status(self) -> PoolStatus: ...

    def pool_nodes(self) -> list[PoolNode]: ...

    def set_quarantined(self, node: str, quarantined: bool) -> PoolNode: ...

    # Volumes, environments and secrets (docs/data.md): the caller's own.
    def create_volume(self, name: str, size: int | str | None, shared: bool) -> Volume: ...

    def volumes(self) -> list[Volume]: ...

    def volume(self, key: str) -> Volume: ...

    def delete_volume(self, key: str) -> Volume: ...

    def create_environment(self, name: str, spec: Packages) -> NamedEnvironment: ...

    def environments(self) -> list[NamedEnvironment]: ...

    def delete_environment(self, name: str) -> None: ...

    def set_secret(self, name: str, value: str) -> None: ...

    def secrets(self) -> list[SecretInfo]: ...

    def delete_secret(self, name: str) -> None: ...

    def close(self) -> None: ...
