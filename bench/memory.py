"""Memory: an idle agent's RSS, and the server's RSS with many finished jobs in its store.

    python bench/memory.py [--jobs 100000] [--pg URL]

For each backend (SQLite; PostgreSQL, a throwaway cluster unless --pg): --jobs finished
jobs are put in a fresh store (each with its spec and its submitted event), then a server
and one agent start on it as processes, 20 jobs run through them, and a client walks the
whole job list page by page (1,000 a page). Printed: the server's RSS then and its peak
(VmHWM), the agent's RSS once idle; the embedded background agent's RSS once idle; and, as
the baseline in the same run, a bare `python3` and one that has imported sandrun's agent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from pg_throughput import postgres
from server_throughput import serve, stop, stop_local_agent

from sandrun.client import Client, connect
from sandrun.models import JobRecord
from sandrun.server import open_server_service
from sandrun.spec import parse_spec
from sandrun.states import JobState

MB = 2**20


def fill_finished(db: str, count: int) -> None:
    """`count` completed jobs, recorded 1,000 to a transaction."""
    service = open_server_service(db)
    spec = parse_spec({"command": ["python3", "train.py", "--epochs", "10"], "cpus": 1})
    try:
        for first in range(0, count, 1000):
            at = 1e9 + first
            done = {"state": JobState.COMPLETED, "attempts": 1}
            service.store.insert_jobs(
                [
                    JobRecord.submitted(spec, "bench", at).model_copy(update=done)
                    for _ in range(min(1000, count - first))
                ]
            )
    finally:
        service.close()


def rss(pid: int) -> tuple[float, float]:
    """(RSS now, peak RSS) of `pid` in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return psutil.Process(pid).memory_info().rss / MB, int(fields["VmHWM"].split()[0]) / 1024


def idle(client: Client) -> None:
    """Run 20 jobs and wait until each has ended: the agent is idle after."""
    for job in client.submit_many([{"command": ["true"]}] * 20):
        job.wait(60)


def walk(client: Client) -> int:
    seen, cursor = 0, None
    while True:
        page = client.jobs(limit=1000, cursor=cursor)
        seen += len(page.jobs)
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def baseline(code: str) -> float:
    """RSS (MiB) of a Python process that ran `code` and then waits."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"{code}\nimport sys; sys.stdout.write('ok\\n'); sys.stdout.flush(); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()
    size = rss(proc.pid)[0]
    proc.stdin.close()
    proc.wait()
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--pg", help="postgresql:// URL (default: a throwaway cluster)")
    args = parser.parse_args()
    print(f"{'bare python3':<44} {baseline('pass'):7.1f} MiB")
    imported = baseline("import sandrun.agent.standalone, sandrun.client")
    print(f"{'python3 that imported the agent and client':<44} {imported:7.1f} MiB")
    with tempfile.TemporaryDirectory() as tmp, postgres(args.pg) as pg:
        for label, db in (("sqlite", str(Path(tmp) / "server.db")), ("postgres", pg.create())):
            begin = time.perf_counter()
            fill_finished(db, args.jobs)
            filled = time.perf_counter() - begin
            url, token, procs = serve(Path(tmp) / label, [1.0], db)
            try:
                with connect(url, token=token) as client:
                    idle(client)
                    listed = walk(client)
                    time.sleep(2)  # a couple of heartbeats: the agent at rest
                    server_now, server_peak = rss(procs[0].pid)
                    agent_now, _ = rss(procs[1].pid)
            finally:
                stop(procs)
            print(
                f"{label}: {args.jobs:,} finished jobs (filled in {filled:.0f} s), "
                f"{listed:,} listed in pages of 1,000:"
            )
            print(f"  {'server RSS':<42} {server_now:7.1f} MiB   peak {server_peak:.1f} MiB")
            print(f"  {'idle agent RSS':<42} {agent_now:7.1f} MiB")
        home = Path(tmp) / "embedded"
        with connect(home=home) as client:
            idle(client)
            time.sleep(2)
            agent = int((home / "agent.lock").read_text())
            print(f"{'embedded background agent, idle':<44} {rss(agent)[0]:7.1f} MiB")
        stop_local_agent(home)
    print("targets (issue 9): idle agent <= 60 MB; server with 100,000 finished jobs <= 200 MB")


if __name__ == "__main__":
    main()
