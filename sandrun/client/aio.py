"""The async SDK: `await sandrun.connect_async()`, `await job.wait()`,
`async for line in job.logs(follow=True)`.

It wraps the sync client, running each blocking call on a worker thread, so the two can
never disagree about what a call means; an event loop is never blocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sandrun.client.client import Client, connect
from sandrun.client.job import Job
from sandrun.models import Attempt, Event, JobPage, OutputFile
from sandrun.states import JobState

T = TypeVar("T")
_DONE = object()


async def connect_async(
    url: str | None = None, *, token: str | None = None, home: str | Path | None = None
) -> AsyncClient:
    """Like `connect()`, for asyncio code."""
    return AsyncClient(await asyncio.to_thread(connect, url, token=token, home=home))


class AsyncClient:
    def __init__(self, client: Client) -> None:
        self.sync = client

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def run(self, command: object = None, /, **fields: Any) -> AsyncJob:
        return AsyncJob(await asyncio.to_thread(self.sync.run, command, **fields))

    async def submit(self, spec: Any, *, upload_code: bool = False) -> AsyncJob:
        job = await asyncio.to_thread(self.sync.submit, spec, upload_code=upload_code)
        return AsyncJob(job)

    async def submit_many(self, specs: Any, *, upload_code: bool = False) -> list[AsyncJob]:
        jobs = await asyncio.to_thread(self.sync.submit_many, specs, upload_code=upload_code)
        return [AsyncJob(job) for job in jobs]

    async def wait(self, jobs: list[AsyncJob], timeout: float | None = None) -> list[AsyncJob]:
        await asyncio.to_thread(self.sync.wait, [job.sync for job in jobs], timeout)
        return jobs

    async def get(self, job_id: str) -> AsyncJob:
        return AsyncJob(await asyncio.to_thread(self.sync.get, job_id))

    async def jobs(self, **filters: Any) -> JobPage:
        return await asyncio.to_thread(self.sync.jobs, **filters)

    async def cancel(self, job_id: str) -> AsyncJob:
        return AsyncJob(await asyncio.to_thread(self.sync.cancel, job_id))


class AsyncJob:
    def __init__(self, job: Job) -> None:
        self.sync = job

    def __repr__(self) -> str:
        return repr(self.sync).replace("<Job", "<AsyncJob", 1)

    @property
    def id(self) -> str:
        return self.sync.id

    @property
    def status(self) -> JobState:
        """As of the last refresh (`await job.refresh()`)."""
        return self.sync.record.state

    @property
    def exit_code(self) -> int | None:
        return self.sync.record.exit_code

    @property
    def is_terminal(self) -> bool:
        return self.sync.record.is_terminal

    async def refresh(self) -> AsyncJob:
        await asyncio.to_thread(self.sync.refresh)
        return self

    async def wait(self, timeout: float | None = None, *, check: bool = False) -> AsyncJob:
        await asyncio.to_thread(self.sync.wait, timeout, check=check)
        return self

    async def result(self, timeout: float | None = None) -> Any:
        return await asyncio.to_thread(self.sync.result, timeout)

    async def cancel(self) -> AsyncJob:
        await asyncio.to_thread(self.sync.cancel)
        return self

    async def pause(self) -> AsyncJob:
        await asyncio.to_thread(self.sync.pause)
        return self

    async def resume(self) -> AsyncJob:
        await asyncio.to_thread(self.sync.resume)
        return self

    async def attempts(self) -> list[Attempt]:
        return await asyncio.to_thread(lambda: self.sync.attempts)

    async def events(self) -> list[Event]:
        return await asyncio.to_thread(lambda: self.sync.events)

    async def outputs(self) -> list[OutputFile]:
        return await asyncio.to_thread(lambda: self.sync.outputs)

    async def read_bytes(self, path: str) -> bytes:
        return await asyncio.to_thread(self.sync.read_bytes, path)

    async def read_text(self, path: str) -> str:
        return await asyncio.to_thread(self.sync.read_text, path)

    async def download(self, dest: str | Path) -> list[Path]:
        return await asyncio.to_thread(self.sync.download, dest)

    def logs(self, follow: bool = False, tail: int | None = None) -> AsyncIterator[str]:
        """Log lines; with `follow`, until the job has ended."""
        return _iterate(self.sync.logs(follow=follow, tail=tail))


async def _iterate(items: Iterator[T]) -> AsyncIterator[T]:
    # Each step of the blocking iterator runs on a worker thread.
    while (item := await asyncio.to_thread(next, items, _DONE)) is not _DONE:
        yield item  # type: ignore[misc]
