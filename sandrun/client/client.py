"""The SDK entry point: `connect()` and the Client it returns."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sandrun.agent import detect_capacity
from sandrun.client.job import POLL_MAX, POLL_START, Job
from sandrun.embedded import ensure_agent, open_service
from sandrun.errors import InvalidInput, SandrunError
from sandrun.home import Home
from sandrun.models import JobPage, LogChunk
from sandrun.spec import JobSpec, parse_spec

LOG_PAGE = 1000


def connect(url: str | None = None, *, home: str | Path | None = None) -> Client:
    """A client: embedded (SQLite under `home` and a local agent) unless a URL is given."""
    url = url or os.environ.get("SANDRUN_URL")
    if url:
        raise SandrunError(
            f"cannot connect to {url}: this version of sandrun runs embedded only",
            field="url",
            suggestions=["unset SANDRUN_URL to run jobs on this machine"],
        )
    return Client(Home.resolve(home))


class Client:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.service = open_service(home)

    def close(self) -> None:
        self.service.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, spec: JobSpec | dict[str, Any]) -> Job:
        """Record the job durably and make sure a local agent will run it."""
        spec = parse_spec(spec)
        _check_fits_here(spec)
        job = Job(self, self.service.submit(spec))
        ensure_agent(self.home)
        return job

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
            raise InvalidInput(
                f"cannot run a {type(command).__name__}; give a shell string, an argv list, "
                "a JobSpec or a dict",
                field="command",
            )
        return self.submit({**data, **fields})

    def get(self, job_id: str) -> Job:
        return Job(self, self.service.get(job_id))

    def jobs(
        self,
        *,
        state: str | None = None,
        name: str | None = None,
        label: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        return self.service.list_jobs(
            state=state, name=name, label=label, limit=limit, cursor=cursor
        )

    def cancel(self, job_id: str) -> Job:
        return Job(self, self.service.cancel(job_id))

    def logs(
        self, job_id: str, *, follow: bool = False, attempt: int | None = None
    ) -> Iterator[LogChunk]:
        """Chunks in order. With `follow`, poll for more until the job ends and all is read."""
        cursor = (0, 0)
        delay = POLL_START
        ended = False
        while True:
            chunks = self.service.logs(job_id, attempt=attempt, after=cursor, limit=LOG_PAGE)
            yield from chunks
            if chunks:
                cursor = (chunks[-1].attempt, chunks[-1].seq)
                delay = POLL_START
            if len(chunks) == LOG_PAGE:
                continue
            if not follow or ended:
                return
            # An agent stores all its logs before it reports the end, so one more read
            # after the job is seen to end gets the rest.
            ended = self.service.get(job_id).is_terminal
            if not ended:
                time.sleep(delay)
                delay = min(delay * 2, POLL_MAX)


def _check_fits_here(spec: JobSpec) -> None:
    """Embedded jobs run on this machine: refuse one that could never fit it."""
    here = detect_capacity()
    if spec.cpus > here.cpus:
        raise InvalidInput(
            f"cpus: the job asks for {spec.cpus:g} CPUs; this machine has {here.cpus:g}",
            field="cpus",
        )
    if spec.memory and spec.memory > here.memory_mb:
        raise InvalidInput(
            f"memory: the job asks for {spec.memory} MiB; this machine has {here.memory_mb} MiB",
            field="memory",
        )
    if spec.gpus:
        raise InvalidInput(
            "gpus: GPU jobs need the resources support of a later sandrun; "
            "this version runs CPU jobs",
            field="gpus",
        )
