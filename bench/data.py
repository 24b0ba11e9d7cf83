"""What a job's data costs it: jobs of `true` with a volume, a data mount, an environment
or a secret, against the same jobs with none, in the same run (embedded mode, the real
background agent, a fresh $SANDRUN_HOME).

    python bench/data.py [--jobs 200]

Prints jobs/s end to end for each kind and its ratio to plain jobs, and the one-time
costs: an environment's first build (uv, one small wheel from PyPI) and a data mount's
first fetch (from a local HTTP server), each against the job that reuses it. Plain jobs
may run in warm workers; jobs with data never do (they need a sandbox of their own), so
"plain, cold" runs plain jobs in a host directory (which keeps them cold too) for the fair
comparison.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sandrun.client import Client, connect

SIX = "six==1.16.0"


def rate(client: Client, total: int, spec: dict[str, Any]) -> float:
    """Jobs per second, submit to all completed, for `total` jobs of `spec`."""
    start = time.perf_counter()
    jobs = client.submit_many([{"command": ["true"], **spec} for _ in range(total)])
    for job in client.wait(jobs):
        assert job.record.state.value == "completed", (spec, job.record)
    return total / (time.perf_counter() - start)


def once(client: Client, spec: dict[str, Any]) -> float:
    """Seconds for one job of `spec`, submit to completed."""
    start = time.perf_counter()
    job = client.submit({"command": ["true"], **spec}).wait(600)
    assert job.record.state.value == "completed", job.log_text()
    return time.perf_counter() - start


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve(root: Path) -> str:
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sandrun-bench-data-") as tmp:
        root = Path(tmp)
        os.environ["SANDRUN_HOME"] = str(root / "home")
        (root / "web").mkdir()
        (root / "web" / "data.bin").write_bytes(os.urandom(1 << 20))
        url = serve(root / "web") + "/data.bin"
        with connect() as client:
            client.create_volume("bench", size="1GB")
            client.set_secret("TOKEN", "not-a-real-token")
            env = {"environment": {"requirements": [SIX]}}
            mount = {"data_mounts": [{"source": url, "target": "/data.bin"}]}
            first = {"env build": once(client, env), "mount fetch": once(client, mount)}
            again = {"env build": once(client, env), "mount fetch": once(client, mount)}
            rate(client, 20, {})  # the agent and its warm workers started
            kinds: dict[str, dict[str, Any]] = {
                "plain": {},
                "plain, cold": {"working_dir": str(root)},  # a host directory: never warm
                "volume (ro)": {"volumes": [{"name": "bench", "read_only": True}]},
                "data mount": mount,
                "environment": env,
                "secret (env)": {"secrets": ["TOKEN"]},
            }
            results: dict[str, float] = {}
            for name, spec in kinds.items():
                results[name] = rate(client, args.jobs, spec)
    base = results["plain"]
    print(f"{args.jobs} jobs of `true` each, embedded, jobs/s (ratio to plain):")
    for name, value in results.items():
        print(f"  {name:14} {value:8.1f}  ({value / base:.2f})")
    print("one-time costs, first job vs the next (s):")
    for name in first:
        print(f"  {name:14} {first[name]:6.2f} then {again[name]:.2f}")


if __name__ == "__main__":
    main()
