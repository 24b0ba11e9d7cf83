"""Wake-ups for an agent: a datagram on an abstract Unix socket named after its home.

Submitters (any process) send one datagram after they commit; the agent blocks in recv
with a timeout instead of polling the store. A lost datagram only costs the fallback
timeout. Abstract sockets leave no file behind and vanish with their process.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path


def address(home: Path) -> str:
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:24]
    return f"\0sandrun-agent-{digest}"


def notify(addr: str, kind: str) -> None:
    """Tell the agent at `addr` that something changed; silent if none listens.

    Never blocks: when the agent's queue is full it has wake-ups pending already, and a
    blocking send there would hang the sender (a submit, a finished attempt, a signal).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.sendto(kind.encode(), addr)
        except OSError:  # nobody listening, or the queue is full
            pass


class Waker:
    def __init__(self, addr: str) -> None:
        self.addr = addr
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(addr)

    def wake(self, kind: str = "wake") -> None:
        notify(self.addr, kind)

    def wait(self, timeout: float) -> set[str]:
        """Block until woken or `timeout` passes; return the kinds of wake-up received."""
        kinds: set[str] = set()
        self._sock.settimeout(max(timeout, 0.0))
        try:
            kinds.add(self._sock.recv(64).decode(errors="replace"))
        except (TimeoutError, BlockingIOError):
            return kinds
        self._sock.setblocking(False)
        while True:
            try:
                kinds.add(self._sock.recv(64).decode(errors="replace"))
            except BlockingIOError:
                return kinds

    def close(self) -> None:
        self._sock.close()
