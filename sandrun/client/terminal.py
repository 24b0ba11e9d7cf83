"""This process's terminal, wired to a command running inside a job (`sandrun shell`,
`sandrun exec -it`, `job.ssh()`): raw keystrokes in, output out, resizes followed."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from types import FrameType

from sandrun.client.execs import ExecStream


def size() -> tuple[int, int]:
    """This terminal's rows and columns (80 x 24 when there is none)."""
    columns, rows = shutil.get_terminal_size()
    return rows, columns


def interact(stream: ExecStream, terminal: bool, stdin: bool = True) -> int:
    """Drive `stream` from this process's stdin and stdout to its end; its exit code.
    `terminal`: the command has a pseudo-terminal (keys go raw: Ctrl-C is the far side's);
    else Ctrl-C sends it SIGINT, and a second one gives up. `stdin`: pass ours on."""
    with _raw(terminal), _follow_resizes(stream, terminal), stream:
        if stdin:
            threading.Thread(target=_feed, args=(stream,), name="stdin", daemon=True).start()
        else:
            stream.eof()
        interrupted = False
        while True:
            try:
                got = stream.read()
            except KeyboardInterrupt:
                if interrupted:
                    return 130
                interrupted = True
                stream.signal("INT")
                continue
            if isinstance(got, int):
                return got
            out = sys.stdout.buffer if got[0] == 1 else sys.stderr.buffer
            out.write(got[1])
            out.flush()


def _feed(stream: ExecStream) -> None:
    fd = sys.stdin.fileno()
    while True:
        with contextlib.suppress(InterruptedError):
            select.select([fd], [], [])
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            stream.eof()
            return
        stream.write(data)


@contextlib.contextmanager
def _raw(terminal: bool) -> Iterator[None]:
    if not (terminal and sys.stdin.isatty()):
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _follow_resizes(stream: ExecStream, terminal: bool) -> Iterator[None]:
    if not terminal or threading.current_thread() is not threading.main_thread():
        yield
        return

    def resized(signum: int, frame: FrameType | None) -> None:
        stream.resize(*size())

    before = signal.signal(signal.SIGWINCH, resized)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, before)
