"""sandrun: embedded (a fresh $SANDRUN_HOME, its background agent), or a server with two
1-CPU agents on loopback. --arg mode=embedded|server --arg sandbox=auto|none|bwrap
--arg db=sqlite|postgresql://... --arg warm=SECONDS (0: every job cold; default 60)"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from workloads import measure, sizes_from_argv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server_throughput import serve, stop, stop_local_agent

from sandrun.client import App, Client, connect


def add_one(x: int) -> int:
    return x + 1


class Sandrun:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.add_one = App("bench", client=client).function()(add_one)

    def commands(self, argv: list[str], n: int) -> None:
        # Submitted together, as a user with many jobs would (and .map() does): one
        # request and one transaction per 1,000 (Slurm's driver uses a job array).
        jobs = self.client.submit_many([{"command": argv}] * n)
        for job in self.client.wait(jobs, timeout=600):  # as Ray's get, Celery's join
            if job.exit_code != 0:
                raise SystemExit(f"job {job.id} failed: {job.record}")

    def calls(self, n: int) -> list[int]:
        return list(self.add_one.map(range(n), progress=False))  # type: ignore[arg-type]

    def call_one(self) -> int:
        return int(self.add_one.remote(1))

    def stamp(self) -> str:
        job = self.client.submit({"command": ["date", "+%s.%N"]}).wait(60)
        return job.log_text("stdout")


def main() -> None:
    sizes, only, args = sizes_from_argv(__doc__)
    opts = dict(kv.split("=", 1) for kv in args.arg)
    os.environ["SANDRUN_SANDBOX"] = opts.get("sandbox", "auto")
    os.environ["SANDRUN_WARM_IDLE"] = warm = opts.get("warm", "60")
    with tempfile.TemporaryDirectory() as tmp:
        if opts.get("mode", "embedded") == "embedded":
            home = Path(tmp) / "home"
            try:
                with connect(home=home) as client:
                    measure(Sandrun(client), sizes, only)
            finally:
                stop_local_agent(home)
            return
        db = opts.get("db", "sqlite")
        url, token, procs = serve(
            Path(tmp),
            [1.0, 1.0],
            None if db == "sqlite" else db,
            agent_args=("--warm-idle", warm),
        )
        try:
            with connect(url, token=token) as client:
                measure(Sandrun(client), sizes, only)
        finally:
            stop(procs)


if __name__ == "__main__":
    main()
