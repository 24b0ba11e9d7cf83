"""`sandrun run`'s wait: the job's logs as they come; while it is pending, why (a spinner
on a terminal, a line per change elsewhere); Ctrl-C or SIGTERM cancels it."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

import typer

from sandrun.cli import render
from sandrun.client import Client, Job
from sandrun.errors import IllegalTransition, SandrunError

POLL = 1.0  # seconds between looks at why a pending job waits


def follow(client: Client, job: Job) -> NoReturn:
    """Stream logs until the job ends, then exit with the job's status."""
    started = threading.Event()  # the first log chunk arrived, or the job left pending
    waiting = threading.Thread(target=_say_why_pending, args=(client, job.id, started), daemon=True)
    try:
        with _sigterm_as_interrupt():
            waiting.start()
            _stream(client, job.id, started)
    except KeyboardInterrupt:
        render.err.print(f"\n[dim]cancelling job {job.id}…[/dim]")
        try:
            job.cancel()
        except IllegalTransition:
            pass  # it ended meanwhile
    finally:
        started.set()
        waiting.join()
    record = job.wait().record
    for event in job.events:
        if event.kind == "outputs_unmatched" and event.attempt == record.attempts:
            render.err.print(f"[yellow]warning: {event.message}[/]")
    style = "green" if record.exit_code == 0 and not record.failure_reason else "red"
    render.err.print(f"[{style}]{render.summary(record)}[/]")
    raise typer.Exit(render.exit_code_for(record))


def _stream(client: Client, job_id: str, started: threading.Event) -> None:
    attempt = 0
    for chunk in client.logs(job_id, follow=True):
        started.set()
        if attempt and chunk.attempt != attempt:
            render.err.print(f"[dim]── attempt {chunk.attempt} ──[/dim]")
        attempt = chunk.attempt
        stream = sys.stdout if chunk.stream == "stdout" else sys.stderr
        stream.buffer.write(chunk.data)
        stream.flush()


def _say_why_pending(client: Client, job_id: str, started: threading.Event) -> None:
    """While the job is pending, say why, and again each time the reason changes."""
    said: str | None = None
    spinner = render.err.status("") if render.err.is_terminal else None
    try:
        while not started.is_set():
            try:
                reason = client.why_pending(job_id)
            except SandrunError:  # the server is away for a moment: the stream says more
                reason = said
            if reason is None:
                return  # it started (or ended)
            if reason != said:
                said = reason
                if spinner is not None:
                    spinner.update(f"[dim]waiting: {reason}[/dim]")
                    spinner.start()
                else:
                    render.err.print(f"[dim]waiting: {reason}[/dim]")
            started.wait(POLL)
    finally:
        if spinner is not None:
            spinner.stop()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM cancels the job as Ctrl-C does (a scheduler stopping `sandrun run`)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
