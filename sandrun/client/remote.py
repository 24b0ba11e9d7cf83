"""The HTTP transport: the same calls, against a sandrun server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from sandrun.bulk_models import EndedJobs, SubmittedBatch, Waiting
from sandrun.client.execs import ExecStream, RemoteExec
from sandrun.data_models import NamedEnvironment, SecretInfo, Volume
from sandrun.errors import Forbidden, ServerUnreachable
from sandrun.exec_models import ExecRequest
from sandrun.httpjson import HttpJson, raise_for_error, ws_url
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
from sandrun.protocol import Uploaded
from sandrun.retention_models import GcReport, GcRequest
from sandrun.signing import Identity
from sandrun.spec import JobSpec
from sandrun.spec.environment import Packages

_ATTEMPTS = TypeAdapter(list[Attempt])
_CHECKPOINTS = TypeAdapter(list[Checkpoint])
_EVENTS = TypeAdapter(list[Event])
_CHUNKS = TypeAdapter(list[LogChunk])
_OUTPUTS = TypeAdapter(list[OutputFile])
_NODES = TypeAdapter(list[NodeInfo])
_INSTANCES = TypeAdapter(list[Instance])
_RUNS = TypeAdapter(list[PipelineRun])
_TRANSFERS = TypeAdapter(list[Transfer])
_POOL_NODES = TypeAdapter(list[PoolNode])


class HttpTransport:
    embedded = False

    def __init__(self, url: str, token: str | None, key: Identity | None = None) -> None:
        self.api = HttpJson(url, token, key=key)

    def close(self) -> None:
        self.api.close()

    def _get(self, path: str, **params: object) -> bytes:
        query = {k: v for k, v in params.items() if v is not None}
        return self.api.request("GET", path, params=query).content

    def _job(self, job_id: str) -> str:
        return f"/v1/jobs/{quote(job_id, safe='')}"

    def submit(self, spec: JobSpec) -> JobRecord:
        response = self.api.request("POST", "/v1/jobs", json=spec.model_dump(mode="json"))
        return JobRecord.model_validate_json(response.content)

    def submit_many(self, specs: list[JobSpec]) -> list[JobRecord]:
        body = {"jobs": [spec.model_dump(mode="json") for spec in specs]}
        response = self.api.request("POST", "/v1/jobs/batch", json=body)
        return SubmittedBatch.model_validate_json(response.content).jobs

    def get(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate_json(self._get(self._job(job_id)))

    def list_jobs(
        self,
        *,
        state: str | None,
        name: str | None,
        label: str | None,
        limit: int,
        cursor: str | None,
    ) -> JobPage:
        data = self._get(
            "/v1/jobs", state=state, name=name, label=label, limit=limit, cursor=cursor
        )
        return JobPage.model_validate_json(data)

    def wait(self, job_id: str, timeout: float) -> JobRecord:
        held = min(timeout, 30.0)
        response = self.api.request(
            "GET",
            f"{self._job(job_id)}/wait",
            params={"timeout": held},
            timeout=httpx.Timeout(10.0, read=held + 10),
        )
        return JobRecord.model_validate_json(response.content)

    def wait_all(self, ids: list[str], timeout: float) -> list[JobRecord]:
        held = min(timeout, 30.0)
        response = self.api.request(
            "POST",
            "/v1/jobs/wait",
            json={"ids": ids, "timeout": held},
            timeout=httpx.Timeout(10.0, read=held + 10),
        )
        return EndedJobs.model_validate_json(response.content).jobs

    def cancel(self, job_id: str) -> JobRecord:
        response = self.api.request("POST", f"{self._job(job_id)}/cancel")
        return JobRecord.model_validate_json(response.content)

    def pause(self, job_id: str) -> JobRecord:
        response = self.api.request("POST", f"{self._job(job_id)}/pause")
        return JobRecord.model_validate_json(response.content)

    def resume(self, job_id: str) -> JobRecord:
        response = self.api.request("POST", f"{self._job(job_id)}/resume")
        return JobRecord.model_validate_json(response.content)

    def checkpoint(self, job_id: str) -> JobRecord:
        response = self.api.request("POST", f"{self._job(job_id)}/checkpoint")
        return JobRecord.model_validate_json(response.content)

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        return _CHECKPOINTS.validate_json(self._get(f"{self._job(job_id)}/checkpoints"))

    def exec(self, job_id: str, request: ExecRequest) -> ExecStream:
        auth = self.api.http.headers.get("authorization")
        if auth is None and self.api.http.auth is not None:
            raise Forbidden("exec needs a token: a key-signed client cannot open a WebSocket")
        headers = {"Authorization": auth} if auth else {}
        return RemoteExec(ws_url(self.api.url, f"{self._job(job_id)}/exec"), headers, request)

    def attempts(self, job_id: str) -> list[Attempt]:
        return _ATTEMPTS.validate_json(self._get(f"{self._job(job_id)}/attempts"))

    def events(self, job_id: str) -> list[Event]:
        return _EVENTS.validate_json(self._get(f"{self._job(job_id)}/events"))

    def logs(self, job_id: str, *, attempt: int | None) -> list[LogChunk]:
        out: list[LogChunk] = []
        cursor = (0, 0)
        while True:
            page = _CHUNKS.validate_json(
                self._get(
                    f"{self._job(job_id)}/logs",
                    attempt=attempt,
                    after_attempt=cursor[0],
                    after_seq=cursor[1],
                )
            )
            out.extend(page)
            if not page:
                return out
            cursor = (page[-1].attempt, page[-1].seq)

    def follow_logs(self, job_id: str, *, attempt: int | None) -> Iterator[LogChunk]:
        params = {"attempt": attempt} if attempt is not None else {}
        try:
            with self.api.http.stream(
                "GET",
                f"{self._job(job_id)}/logs/stream",
                params=params,
                timeout=httpx.Timeout(10.0, read=None),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for_error(response)
                for line in response.iter_lines():
                    if line:
                        yield LogChunk.model_validate_json(line)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"lost the log stream from {self.api.url}: {exc}") from None

    def outputs(self, job_id: str) -> list[OutputFile]:
        return _OUTPUTS.validate_json(self._get(f"{self._job(job_id)}/outputs"))

    def read_output(self, job_id: str, path: str) -> bytes:
        # A server with an object store answers with a presigned URL (httpx sends the
        # token to no other origin).
        where = f"{self._job(job_id)}/outputs/{quote(path)}"
        return self.api.request("GET", where, follow_redirects=True).content

    def put_blob(self, data: bytes) -> str:
        response = self.api.request(
            "POST",
            "/v1/artifacts",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=httpx.Timeout(10.0, read=300.0, write=300.0),
        )
        return Uploaded.model_validate_json(response.content).digest

    def has_blob(self, digest: str) -> bool:
        try:
            response = self.api.http.head(f"/v1/artifacts/{quote(digest, safe='')}")
        except httpx.TransportError as exc:
            url = self.api.url
            raise ServerUnreachable(f"cannot reach the sandrun server at {url}: {exc}") from None
        if response.status_code == 404:
            return False
        raise_for_error(response)
        return True

    def instances(self, min_gpu_memory_gb: float, max_price: float | None) -> list[Instance]:
        data = self._get("/v1/instances", min_gpu_memory=min_gpu_memory_gb, max_price=max_price)
        return _INSTANCES.validate_json(data)

    def countersignature(self, job_id: str, attempt: int) -> Countersignature | None:
        where = f"{self._job(job_id)}/attempts/{attempt}/countersignature"
        return Countersignature.model_validate_json(self._get(where))

    def why_pending(self, job_id: str) -> str | None:
        return Waiting.model_validate_json(self._get(self._job(job_id) + "/waiting")).reason

    def nodes(self) -> list[NodeInfo]:
        return _NODES.validate_json(self._get("/v1/nodes"))

    def collect_garbage(self, older_than: float, purge_jobs: bool) -> GcReport:
        body = GcRequest(older_than=older_than, purge_jobs=purge_jobs)
        response = self.api.request("POST", "/v1/admin/gc", json=body.model_dump())
        return GcReport.model_validate_json(response.content)

    def _run(self, run_id: str) -> str:
        return f"/v1/pipelines/{quote(run_id, safe='')}"

    def run_pipeline(self, definition: dict[str, Any], params: dict[str, Any]) -> PipelineRun:
        body = {"definition": definition, "params": params}
        response = self.api.request("POST", "/v1/pipelines", json=body)
        return PipelineRun.model_validate_json(response.content)

    def pipeline_status(self, run_id: str) -> PipelineStatus:
        return PipelineStatus.model_validate_json(self._get(self._run(run_id)))

    def pipelines(self, limit: int) -> list[PipelineRun]:
        return _RUNS.validate_json(self._get("/v1/pipelines", limit=limit))

    def cancel_pipeline(self, run_id: str) -> PipelineRun:
        response = self.api.request("POST", self._run(run_id) + "/cancel")
        return PipelineRun.model_validate_json(response.content)

    def retry_pipeline(self, run_id: str) -> PipelineRun:
        response = self.api.request("POST", self._run(run_id) + "/retry")
        return PipelineRun.model_validate_json(response.content)

    # --- the pool -----------------------------------------------------------------------

    def balance(self, owner: str | None) -> Balance:
        return Balance.model_validate_json(self._get("/v1/balance", owner=owner))

    def credit(self, owner: str, amount: float, memo: str | None) -> Balance:
        body = {"owner": owner, "amount": amount, "memo": memo}
        return Balance.model_validate_json(
            self.api.request("POST", "/v1/credit", json=body).content
        )

    def ledger(self, job_id: str | None, account: str | None) -> list[Transfer]:
        return _TRANSFERS.validate_json(self._get("/v1/ledger", job=job_id, account=account))

    def ledger_check(self) -> LedgerCheck:
        return LedgerCheck.model_validate_json(self._get("/v1/ledger/check"))

    def cost_report(self, since: str, by: str) -> CostReport:
        return CostReport.model_validate_json(self._get("/v1/cost", since=since, by=by))

    def pool_status(self) -> PoolStatus:
        return PoolStatus.model_validate_json(self._get("/v1/pool"))

    def pool_nodes(self) -> list[PoolNode]:
        return _POOL_NODES.validate_json(self._get("/v1/pool/nodes"))

    def set_quarantined(self, node: str, quarantined: bool) -> PoolNode:
        verb = "quarantine" if quarantined else "release"
        path = f"/v1/nodes/{quote(node, safe='')}/{verb}"
        return PoolNode.model_validate_json(self.api.request("POST", path).content)

    # --- volumes and secrets ----------------------------------------------------------

    def create_volume(self, name: str, size: int | str | None, shared: bool) -> Volume:
        body = {"name": name, "size": size, "shared": shared}
        response = self.api.request("POST", "/v1/volumes", json=body)
        return Volume.model_validate_json(response.content)

    def volumes(self) -> list[Volume]:
        return _VOLUMES.validate_json(self._get("/v1/volumes"))

    def volume(self, key: str) -> Volume:
        return Volume.model_validate_json(self._get(f"/v1/volumes/{quote(key, safe='')}"))

    def delete_volume(self, key: str) -> Volume:
        path = f"/v1/volumes/{quote(key, safe='')}"
        return Volume.model_validate_json(self.api.request("DELETE", path).content)

    def create_environment(self, name: str, spec: Packages) -> NamedEnvironment:
        body = {"name": name, "spec": spec.model_dump(mode="json", exclude_defaults=True)}
        response = self.api.request("POST", "/v1/environments", json=body)
        return NamedEnvironment.model_validate_json(response.content)

    def environments(self) -> list[NamedEnvironment]:
        return _ENVIRONMENTS.validate_json(self._get("/v1/environments"))

    def delete_environment(self, name: str) -> None:
        self.api.request("DELETE", f"/v1/environments/{quote(name, safe='')}")

    def set_secret(self, name: str, value: str) -> None:
        path = f"/v1/secrets/{quote(name, safe='')}"
        self.api.request("PUT", path, json={"value": value})

    def secrets(self) -> list[SecretInfo]:
        return _SECRETS.validate_json(self._get("/v1/secrets"))

    def delete_secret(self, name: str) -> None:
        self.api.request("DELETE", f"/v1/secrets/{quote(name, safe='')}")


_VOLUMES = TypeAdapter(list[Volume])
_SECRETS = TypeAdapter(list[SecretInfo])
_ENVIRONMENTS = TypeAdapter(list[NamedEnvironment])
