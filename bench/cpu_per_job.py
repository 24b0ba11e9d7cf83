"""Where the CPU goes per job through a server: the server, the agent, the client, and the
rest (the jobs, their sandboxes, the database), against the machine's own count.

    python bench/cpu_per_job.py [--jobs 400] [--cpus 2] [--db URL]

One server (SQLite under a temporary directory unless --db names a PostgreSQL database)
and one agent offering --cpus slots; --jobs jobs of `true` go in with one batch submit and
are waited for. Prints jobs/s and each process's CPU milliseconds per job.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil
from server_throughput import serve, stop

from sandrun.client import connect


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--cpus", type=float, default=2.0)
    parser.add_argument("--db", default=None, help="a PostgreSQL URL (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url, user, procs = serve(Path(tmp), [args.cpus], db=args.db)
        try:
            with connect(url, token=user) as client:
                client.submit({"command": ["true"]}).wait(60)  # warm up
                server, agent = (psutil.Process(p.pid) for p in procs)
                me = psutil.Process()
                before = [_cpu(p) for p in (server, agent, me)]
                machine = psutil.cpu_times()
                start = time.perf_counter()
                jobs = client.submit_many([{"command": ["true"]}] * args.jobs)
                for job in jobs:
                    job.wait(600)
                elapsed = time.perf_counter() - start
                used = [_cpu(p) - b for p, b in zip((server, agent, me), before, strict=True)]
                after = psutil.cpu_times()
        finally:
            stop(procs)
    busy = (after.user + after.system) - (machine.user + machine.system)
    per_job = [1000 * u / args.jobs for u in used]
    rest = 1000 * (busy - sum(used)) / args.jobs
    print(f"{args.jobs} jobs on {args.cpus:g} slots: {args.jobs / elapsed:.0f} jobs/s")
    print(
        f"CPU ms per job: server {per_job[0]:.2f}, agent {per_job[1]:.2f}, "
        f"client {per_job[2]:.2f}, rest (jobs, sandboxes, database) {rest:.2f}"
    )
    idle = after.idle - machine.idle
    print(f"machine busy {busy:.1f} s, idle {idle:.1f} s over {elapsed:.1f} s")


if __name__ == "__main__":
    main()
