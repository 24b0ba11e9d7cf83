"""`sandrun server --workers N`: N processes serving one listening socket.

A Python server answers on one core at a time. Forked processes share the socket the
parent bound (the kernel hands each connection to one of them); each opens its own store,
and PostgreSQL's LISTEN/NOTIFY wakes the long-polls of one with the jobs submitted through
another, as it does between servers on several hosts. The parent only watches: it forks a
new worker for one that dies, and passes SIGTERM and SIGINT on to all of them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("sandrun.server")

_RESTART_PAUSE = 1.0  # seconds between restarts of a worker that keeps dying


def serve_forked(count: int, listening: socket.socket, serve: Callable[[], None]) -> None:
    """Run `serve` (which serves `listening` until told to stop) in `count` processes,
    until SIGTERM or SIGINT; a worker that dies is replaced."""
    workers: set[int] = set()
    stopping: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        for pid in workers:
            _signal(pid, signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(count):
            workers.add(_fork(serve))
        while workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            workers.discard(pid)
            if not stopping:
                log.warning("server worker %d ended (%s); starting another", pid, _describe(status))
                time.sleep(_RESTART_PAUSE)
                workers.add(_fork(serve))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        listening.close()


def _fork(serve: Callable[[], None]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        for s in (signal.SIGTERM, signal.SIGINT):  # uvicorn installs its own as it starts
            signal.signal(s, signal.SIG_DFL)
        serve()
    except BaseException:
        log.exception("server worker failed")
        code = 1
    finally:
        os._exit(code)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.waitstatus_to_exitcode(status)}"
