"""sandrun beside Ray, Celery and Slurm on the same machine, in the same run.

    .venv/bin/python bench/peers/run.py [--quick] [--systems raw,sandrun,ray,celery,slurm]

Each peer is installed by this script into its own virtualenv under --envs (Ray, Celery
from PyPI) or from Debian (Slurm, as root), then started, warmed, measured and stopped.
Workloads (workloads.py): (a) jobs of `true`, (b) jobs of `sleep 0.1`, (c) Python function
calls returning a small value, (d) submit -> start latency with idle workers, (e) one
call's round trip, its worker warm. One table
at the end: jobs/s, latency p50/p99, and how many times faster sandrun (embedded, its
default sandbox) is than each row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx  # noqa: F401  (the project's venv: the sandrun driver needs it too)
from slurm import SlurmCluster, slurm_problem

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROJECT_PYTHON = sys.executable
PEERS = {"ray": ["ray==2.60.0"], "celery": ["celery[redis]==5.7.0"]}
REFERENCE = "sandrun embedded"


def peer_python(envs: Path, name: str) -> Path:
    """The peer's own virtualenv, created and filled on first use."""
    python = envs / name / "bin" / "python"
    if not python.exists():
        print(f"installing {name} into {envs / name} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(envs / name)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            + PEERS[name],
            check=True,
        )
    return python


def drive(
    python: Path | str,
    script: str,
    quick: bool,
    env: dict[str, str] | None = None,
    only: str | None = None,
    args: tuple[str, ...] = (),
) -> dict[str, dict]:
    """Run one driver; its JSON lines by workload."""
    argv = [str(python), str(HERE / script), *(["--quick"] if quick else [])]
    argv += ["--only", only] if only else []
    for arg in args:  # a flag of workloads.py as it is, else a driver's KEY=VALUE
        argv += [arg] if arg.startswith("--") else ["--arg", arg]
    done = subprocess.run(
        argv,
        cwd=HERE,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {row["workload"]: row for row in rows}


@contextmanager
def celery_workers(python: Path, redis: str) -> Iterator[dict[str, str]]:
    """Two prefork worker processes on a private queue of a Redis database."""
    env = {**os.environ, "BENCH_REDIS": redis}
    subprocess.run(
        [str(python), "-c", f"import redis; redis.Redis.from_url({redis!r}).flushdb()"],
        check=True,
        env=env,
    )
    celery = str(python.parent / "celery")
    worker = subprocess.Popen(
        [
            celery,
            "-A",
            "celery_tasks",
            "worker",
            "--concurrency",
            "2",
            "--pool",
            "prefork",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=HERE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ping = [celery, "-A", "celery_tasks", "inspect", "ping", "--timeout", "1"]
        deadline = time.monotonic() + 60
        while subprocess.run(ping, cwd=HERE, env=env, capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the Celery workers did not answer a ping in 60 s")
        yield {"BENCH_REDIS": redis}
    finally:
        worker.terminate()
        worker.wait(60)


def redis_url() -> str | None:
    """A Redis to use: $BENCH_REDIS, else the local default if it answers."""
    url = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/15")
    host, _, port = url.split("//", 1)[1].split("/", 1)[0].partition(":")
    import socket

    with suppress(OSError), socket.create_connection((host, int(port or 6379)), timeout=1):
        return url
    return None


def measure_all(systems: list[str], quick: bool, envs: Path) -> dict[str, dict[str, dict]]:
    results: dict[str, dict[str, dict]] = {}
    skipped: dict[str, str] = {}
    if "raw" in systems:
        results["raw (no job system)"] = drive(PROJECT_PYTHON, "drive_raw.py", quick)
    if "sandrun" in systems:
        results[REFERENCE] = drive(PROJECT_PYTHON, "drive_sandrun.py", quick)
        results["sandrun embedded, cold"] = drive(
            PROJECT_PYTHON, "drive_sandrun.py", quick, args=("warm=0",)
        )
        results["sandrun embedded, no sandbox"] = drive(
            PROJECT_PYTHON, "drive_sandrun.py", quick, args=("sandbox=none",)
        )
        if not quick:
            results["sandrun server + 2 agents"] = drive(
                PROJECT_PYTHON,
                "drive_sandrun.py",
                quick,
                only="true,sleep,latency,call",
                args=("mode=server",),
            )
    if "ray" in systems:
        results["ray (num_cpus=2)"] = drive(peer_python(envs, "ray"), "drive_ray.py", quick)
    if "celery" in systems:
        redis = redis_url()
        if redis is None:
            skipped["celery"] = "no Redis at $BENCH_REDIS or 127.0.0.1:6379"
        else:
            python = peer_python(envs, "celery")
            with celery_workers(python, redis) as env:
                results["celery (redis, 2 workers)"] = drive(
                    python, "drive_celery.py", quick, env=env
                )
    if "slurm" in systems:
        problem = slurm_problem()
        if problem is not None:
            skipped["slurm"] = problem
        else:
            with tempfile.TemporaryDirectory() as tmp, SlurmCluster(Path(tmp)) as cluster:
                results["slurm (1 node, 2 CPUs)"] = drive(
                    PROJECT_PYTHON, "drive_slurm.py", quick, env=cluster.env, args=("--slow",)
                )
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    return results


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def table(results: dict[str, dict[str, dict]]) -> None:
    ref = results.get(REFERENCE, {})
    print(
        f"{'system':<32} {'workload':<14} {'jobs/s':>9} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'sandrun x':>10}"
    )
    labels = {
        "true": "(a) true",
        "sleep": "(b) sleep 0.1",
        "calls": "(c) calls",
        "latency": "(d) latency",
        "call": "(e) warm call",
    }
    for workload, label in labels.items():
        for system, rows in results.items():
            row = rows.get(workload)
            if row is None:
                continue
            mine = ref.get(workload)
            if row["seconds"] is not None:
                rate = row["n"] / row["seconds"]
                cells = f"{rate:9.0f} {'':>9} {'':>9}"
                ratio = (mine["n"] / mine["seconds"]) / rate if mine else None
            else:
                p50 = percentile(row["latencies"], 50) * 1000
                p99 = percentile(row["latencies"], 99) * 1000
                cells = f"{'':>9} {p50:9.2f} {p99:9.2f}"
                ratio = p50 / (percentile(mine["latencies"], 50) * 1000) if mine else None
            shown = f"{ratio:9.2f}x" if ratio is not None else ""
            print(f"{system:<32} {label:<14} {cells} {shown:>10}")
    print(
        "sandrun x: how many times faster sandrun embedded (default sandbox) is than the row"
        " (jobs/s ratio; for latency, the p50 ratio)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: under two minutes")
    parser.add_argument("--systems", default="raw,sandrun,ray,celery,slurm")
    parser.add_argument(
        "--envs",
        type=Path,
        default=Path.home() / ".cache" / "sandrun-bench" / "peers",
        help="where the peers' virtualenvs live (created on first use)",
    )
    args = parser.parse_args()
    args.envs.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    results = measure_all(args.systems.split(","), args.quick, args.envs)
    table(results)
    print(
        f"({time.monotonic() - begin:.0f} s; {os.cpu_count()} CPUs; "
        f"bwrap {'present' if shutil.which('bwrap') else 'absent'})"
    )


if __name__ == "__main__":
    main()
