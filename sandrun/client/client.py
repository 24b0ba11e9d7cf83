"""The SDK entry point: `connect()` and the Client it returns."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sandrun.client.job import Job
from sandrun.client.local import EmbeddedTransport
from sandrun.client.remote import HttpTransport
from sandrun.client.transport import Transport
from sandrun.errors import ValidationError
from sandrun.home import Home
from sandrun.models import GcReport, JobPage, LogChunk, NodeInfo
from sandrun.spec import JobSpec, parse_spec


def connect(
    url: str | None = None, *, token: str | None = None, home: str | Path | None = None
) -> Client:
    """A client of the server at `url` (or $SANDRUN_URL, with $SANDRUN_TOKEN), else
    embedded: SQLite under `home` and a local agent. The API is the same either way."""
    url = url or os.environ.get("SANDRUN_URL")
    if url:
        return Client(HttpTransport(url, token or os.environ.get("SANDRUN_TOKEN")))
    return Client(EmbeddedTransport(Home.resolve(home)))


class Client:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, spec: JobSpec | dict[str, Any]) -> Job:
        """Record the job durably; it is pending once this returns."""
        return Job(self, self.transport.submit(parse_spec(spec)))

    def run(self, command: str | list[str] | JobSpec | dict[str, Any], **fields: Any) -> Job:
        """Submit a shell string, an argv list or a spec, with extra spec fields."""
        if isinstance(command, str):
            data: dict[str, Any] = {"shell": command}
        elif isinstance(command, list):
            data = {"command": command}
        elif isinstance(command, JobSpec):
            data = command.to_json_dict()
        elif isinstance(command, dict):
            data = dict(command)
        else:
            raise ValidationError(
                f"cannot run a {type(command).__name__}; give a shell string, an argv list, "
                "a JobSpec or a dict",
                field="command",
            )
        return self.submit({**data, **fields})

    def get(self, job_id: str) -> Job:
        return Job(self, self.transport.get(job_id))

    def jobs(
        self,
        *,
        state: str | None = None,
        name: str | None = None,
        label: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        return self.transport.list_jobs(
            state=state, name=name, label=label, limit=limit, cursor=cursor
        )

    def cancel(self, job_id: str) -> Job:
        return Job(self, self.transport.cancel(job_id))

    def logs(
        self, job_id: str, *, follow: bool = False, attempt: int | None = None
    ) -> Iterator[LogChunk]:
        """Chunks in order; with `follow`, keep yielding until the job has ended."""
        if follow:
            return self.transport.follow_logs(job_id, attempt=attempt)
        return iter(self.transport.logs(job_id, attempt=attempt))

    def nodes(self) -> list[NodeInfo]:
        return self.transport.nodes()

    def collect_garbage(self, older_than: float = 30 * 86400, purge_jobs: bool = False) -> GcReport:
        """Retention (admins): remove the logs of jobs that ended more than `older_than`
        seconds ago (with `purge_jobs`, the jobs), then blobs nothing refers to."""
        return self.transport.collect_garbage(older_than, purge_jobs)
