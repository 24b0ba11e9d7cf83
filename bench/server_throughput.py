"""Throughput and latency through the HTTP server with remote agents (SQLite), compared in
the same run with raw subprocess spawns and with the embedded runner.

    python bench/server_throughput.py [--jobs 1000] [--latency-samples 100]

Every configuration offers the same 2 CPUs of concurrency: embedded (one local agent),
server + 1 agent (2 CPUs), server + 2 agents (1 CPU each). Each job is `true`, 1 CPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from throughput import latencies, percentile, raw_rate, sandrun_rate

from sandrun.client import Client, connect
from sandrun.models import Role
from sandrun.server import open_server_service

SANDRUN = str(Path(sys.executable).parent / "sandrun")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def serve(
    root: Path,
    agents: list[float],
    db: str | None = None,
    servers: int = 1,
    agent_args: tuple[str, ...] = (),
    server_args: tuple[str, ...] = (),
) -> tuple[str, str, list[subprocess.Popen[bytes]]]:
    """Servers on `db` (default: a SQLite file under `root`, with `server_args`) and agents
    with these CPUs (and `agent_args`), spread over the servers. Returns the URL list
    ("a,b": clients fail over), a user token and the processes."""
    root.mkdir(parents=True, exist_ok=True)
    db = db or str(root / "server.db")
    service = open_server_service(db, artifacts=root / "artifacts")
    user = service.create_token("bench", Role.USER)
    agent_token = service.create_token("agents", Role.AGENT)
    admin = service.create_token("admin", Role.ADMIN)
    service.close()
    urls, procs = [], []
    for _ in range(servers):
        port = _port()
        urls.append(f"http://127.0.0.1:{port}")
        procs.append(
            subprocess.Popen(
                [
                    SANDRUN,
                    "server",
                    "--db",
                    db,
                    "--artifacts",
                    str(root / "artifacts"),
                    "--port",
                    str(port),
                    *server_args,
                ],
                stderr=subprocess.DEVNULL,
            )
        )
        _wait(lambda url=urls[-1]: _up(url), f"the server at {urls[-1]}")
    env = {**os.environ, "SANDRUN_TOKEN": agent_token}
    for i, cpus in enumerate(agents):
        mine = urls[i % servers :] + urls[: i % servers]  # its own server first
        procs.append(
            subprocess.Popen(
                [
                    SANDRUN,
                    "agent",
                    "--server",
                    ",".join(mine),
                    "--name",
                    f"a{i}",
                    "--cpus",
                    str(cpus),
                    "--work-dir",
                    str(root / f"a{i}"),
                    *agent_args,
                ],
                env=env,
                stderr=subprocess.DEVNULL,
            )
        )
    with connect(urls[0], token=admin) as c:
        _wait(lambda: sum(n.state == "active" for n in c.nodes()) == len(agents), "agents")
    return ",".join(urls), user, procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop what `serve` started, agents first."""
    for proc in reversed(procs):
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def stop_local_agent(home: Path) -> None:
    """Stop the background agent an embedded client started under `home`."""
    lock = home / "agent.lock"
    if lock.exists() and lock.read_text().strip():
        os.kill(int(lock.read_text()), signal.SIGTERM)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def measure(client: Client, jobs: int, samples: int) -> tuple[float, list[float]]:
    client.submit({"command": ["true"]}).wait(60)  # warm up
    rate, _ = sandrun_rate(client, jobs)
    return rate, latencies(client, samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=100)
    args = parser.parse_args()

    rows: list[tuple[str, float, list[float]]] = []
    raw2 = raw_rate(args.jobs, 2)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "embedded"
        with connect(home=home) as client:
            rows.append(("embedded", *measure(client, args.jobs, args.latency_samples)))
        stop_local_agent(home)
        for label, agents in (("server + 1 agent", [2.0]), ("server + 2 agents", [1.0, 1.0])):
            url, token, procs = serve(Path(tmp) / label.replace(" ", ""), agents)
            try:
                with connect(url, token=token) as client:
                    rows.append((label, *measure(client, args.jobs, args.latency_samples)))
            finally:
                stop(procs)

    embedded = rows[0][1]
    print(f"{'raw subprocess.run, 2 spawners':<24} {raw2:8.0f} jobs/s")
    for label, rate, lat in rows:
        print(
            f"{label:<24} {rate:8.0f} jobs/s  {rate / raw2:5.0%} of raw  "
            f"{rate / embedded:5.0%} of embedded  submit->start p50 "
            f"{percentile(lat, 50) * 1000:6.2f} ms  p99 {percentile(lat, 99) * 1000:6.2f} ms"
        )
    print("targets: server p50 < 15 ms and >= 50% of the embedded throughput")


if __name__ == "__main__":
    main()
