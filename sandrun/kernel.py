"""An interactive session's kernel: one Python interpreter kept alive inside a job, which
runs cells sent to it and keeps their state, as a notebook kernel does (docs/lifecycle.md).

`"$SANDRUN_PYTHON" -m sandrun.kernel --idle SECONDS` is the session job's program: it
listens on a Unix socket in the job's $HOME and ends (exit 0) after `--idle` seconds with
no cell, or when told to close. `... -m sandrun.kernel --cell` (run by an exec into the
job: the same sandbox, uid and $HOME) sends the code on its stdin as one cell and prints
the reply: JSON with the cell's `stdout`, `stderr`, `value` (the repr of its last
expression, if any) and `error` (the exception's type, message and traceback). Like the
runner, it imports only the standard library.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import socket
import sys
import time
import traceback
from typing import Any

SOCKET = ".sandrun-kernel.sock"  # in $HOME, named relatively: socket paths are short
CONNECT_WAIT = 60.0  # seconds a cell waits for its kernel to start listening


def run_cell(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run `code` in `namespace`; the value of a last expression is returned, as a
    notebook shows it."""
    out, err = io.StringIO(), io.StringIO()
    value = error = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            tree = ast.parse(code, "<cell>", "exec")
            last = tree.body[-1] if tree.body else None
            if isinstance(last, ast.Expr):
                tree.body.pop()
            exec(compile(tree, "<cell>", "exec"), namespace)
            if isinstance(last, ast.Expr):
                result = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
                if result is not None:
                    namespace["_"] = result
                    value = repr(result)
        except Exception as exc:
            error = {
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": traceback.format_exc(),
            }
    return {"stdout": out.getvalue(), "stderr": err.getvalue(), "value": value, "error": error}


def _in_home() -> contextlib.AbstractContextManager[None]:
    return contextlib.chdir(os.environ.get("HOME") or ".")


def _received(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def serve(idle: float) -> int:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with _in_home():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET)
        server.bind(SOCKET)
        os.chmod(SOCKET, 0o600)
    server.listen()
    server.settimeout(idle)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    print(f"sandrun kernel: ready (ends after {idle:g} s without a cell)", flush=True)
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            print(f"sandrun kernel: no cell for {idle:g} s; ending", flush=True)
            return 0
        with conn:
            conn.settimeout(None)
            request = json.loads(_received(conn) or b"{}")
            if request.get("close"):
                conn.sendall(json.dumps({"closed": True}).encode())
                print("sandrun kernel: closed", flush=True)
                return 0
            reply = run_cell(str(request.get("code", "")), namespace)
            conn.sendall(json.dumps(reply).encode())


def send(request: dict[str, Any]) -> int:
    """Send one request to the kernel (waiting for it to listen) and print its reply."""
    deadline = time.monotonic() + CONNECT_WAIT
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _in_home():
                conn.connect(SOCKET)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            if time.monotonic() > deadline:
                print("sandrun kernel: the session's kernel is not listening", file=sys.stderr)
                return 1
            time.sleep(0.05)
    with conn:
        conn.sendall(json.dumps(request).encode())
        conn.shutdown(socket.SHUT_WR)
        reply = _received(conn)
    if not reply:
        print("sandrun kernel: the session ended during the cell", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(reply)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandrun-kernel")
    parser.add_argument("--idle", type=float, default=600.0, help="end after this long idle")
    parser.add_argument("--cell", action="store_true", help="run stdin as a cell, print its reply")
    parser.add_argument("--close", action="store_true", help="tell the kernel to end")
    args = parser.parse_args(argv)
    if args.close:
        return send({"close": True})
    if args.cell:
        return send({"code": sys.stdin.read()})
    return serve(args.idle)


if __name__ == "__main__":
    sys.exit(main())
