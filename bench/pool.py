"""What agreement and the ledger cost: a 2-of-3 job against the same job run once, priced
jobs against free ones, and ledger transfers per second.

    python bench/pool.py [--jobs 300] [--transfers 2000] [--pg [URL]] [--no-e2e]

- control plane: the service and store alone (SQLite; with --pg PostgreSQL, a throwaway
  cluster unless a URL is given). This process plays three nodes of three operators and
  claims, starts and ends every job as their agents would. Baseline: the same number of
  plain jobs, run once each, in the same run.
- ledger: `transfers` transfers of one micro-USD, each in its own transaction (what a
  hold or a payment costs alone), and priced jobs (held, paid, refunded) against free ones.
- end to end (SQLite server, three real agents of three operators on loopback, `true`):
  plain jobs against 2-of-3 jobs, submitted in one batch and waited for.

Ratios are consensus (or priced) time over baseline time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pg_throughput import postgres

from sandrun.artifacts import LocalArtifactStore
from sandrun.models import AttemptResult, Capacity, Usage
from sandrun.service import Service
from sandrun.spec.policy import Policy
from sandrun.spec.pricing import PoolPolicy
from sandrun.store import Store, ledger, open_sqlite
from sandrun.store.postgres import PostgresDatabase

ROOM = Capacity(cpus=1 << 20, memory_mb=1 << 40, gpus=0)
NODES = ("n1", "n2", "n3")


def open_service(root: Path, db: Callable[[], str] | None, priced: bool = False) -> Service:
    if db:
        store = Store(PostgresDatabase(db()))
        store.migrate()
    else:
        root.mkdir(parents=True, exist_ok=True)
        store = open_sqlite(root / "bench.db")
    policy = Policy(pool=PoolPolicy(ledger=priced))
    service = Service(store, LocalArtifactStore(root / "blobs"), policy=policy)
    for node in NODES:
        store.register_node(node, node, ROOM, {}, service.clock(), operator=f"op-{node}")
    service.credit("local", 1_000_000)
    return service


def drain(service: Service) -> int:
    """Each node in turn claims, starts and ends (exit 0) what it may; until none can."""
    ran, idle = 0, 0
    while idle < len(NODES):
        idle = 0
        for node in NODES:
            got = service.store.claim(node, ROOM, service.clock(), 60.0)
            if got is None:
                idle += 1
                continue
            service.store.start_attempt(got.job.id, got.attempt, got.token, service.clock())
            result = AttemptResult(exit_code=0, usage=Usage(wall_seconds=0.01, cpus=1))
            service.store.finish_attempt(
                got.job.id, got.attempt, got.token, result, service.decide, service.clock()
            )
            ran += 1
    return ran


def timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


RUNS: dict[str, int] = {}  # how many runs (replicas, for consensus) each shape took


def run_jobs(service: Service, jobs: int, spec: dict[str, Any], shape: str = "") -> None:
    for first in range(0, jobs, 500):
        service.submit_many([{**spec, "timeout": 60}] * min(500, jobs - first))
    RUNS[shape] = drain(service)


def control_plane(root: Path, db: Callable[[], str] | None, jobs: int) -> list[tuple[str, ...]]:
    rows = []
    plain = {"command": ["true"]}
    agreed = {**plain, "consensus": "2-of-3"}
    service = open_service(root / "consensus", db)
    alone = timed(lambda: run_jobs(service, jobs, plain))
    together = timed(lambda: run_jobs(service, jobs, agreed, "2-of-3"))
    rows.append(_row(f"{jobs} jobs: 2-of-3 vs once", jobs, alone, together))
    runs = RUNS["2-of-3"]
    per_run = together / runs / (alone / jobs)
    print(f"2-of-3: {runs / jobs:.2f} runs per job; each run costs {per_run:.2f}x a plain job's")
    service.close()
    free = open_service(root / "free", db)
    priced = open_service(root / "priced", db, priced=True)
    alone = timed(lambda: run_jobs(free, jobs, plain))
    paid = timed(lambda: run_jobs(priced, jobs, plain))
    rows.append(_row(f"{jobs} jobs: priced vs free", jobs, alone, paid))
    assert priced.ledger_check().ok
    free.close()
    priced.close()
    return rows


def _row(name: str, jobs: int, base: float, other: float) -> tuple[str, ...]:
    return (
        name,
        f"{base:.3f}",
        f"{other:.3f}",
        f"{other / base:.2f}",
        f"{(other - base) / jobs * 1000:.2f}",
    )


def transfers(root: Path, db: Callable[[], str] | None, count: int) -> float:
    """Transfers per second, each in a transaction of its own."""
    service = open_service(root / "ledger", db)
    store = service.store

    def move() -> None:
        for i in range(count):
            with store.db.transaction() as tx:
                ledger.transfer(tx, "user:local", f"operator:op-{i % 7}", 1, "payment", 0.0)

    seconds = timed(move)
    assert service.ledger_check().ok
    service.close()
    return count / seconds


def end_to_end(root: Path, jobs: int) -> tuple[str, ...]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sandrun.roles import Role
    from tests.integration.cluster import Cluster

    cluster = Cluster(root / "e2e", db=str(root / "e2e" / "server.db"))
    (root / "e2e").mkdir(parents=True)
    cluster.make_tokens()
    cluster.add_tokens(Role.AGENT, *(f"op-{n}" for n in NODES))
    cluster.start_server()
    try:
        for node in NODES:
            cluster.start_agent(node, cpus=4, token=f"op-{node}")
        with cluster.client() as client:

            def batch(spec: dict[str, Any]) -> None:
                submitted = client.submit_many([spec] * jobs, upload_code=False)
                client.wait(submitted)

            batch({"command": ["true"]})  # warm: not timed
            alone = timed(lambda: batch({"command": ["true"]}))
            together = timed(lambda: batch({"command": ["true"], "consensus": "2-of-3"}))
    finally:
        cluster.stop()
    return _row(f"{jobs} jobs: 2-of-3 vs once", jobs, alone, together)


def show(title: str, rows: list[tuple[str, ...]]) -> None:
    print(f"\n{title}")
    head = ("shape", "baseline s", "other s", "ratio", "overhead/job ms")
    print("{:<30} {:>11} {:>8} {:>6} {:>16}".format(*head))
    for row in rows:
        print("{:<30} {:>11} {:>8} {:>6} {:>16}".format(*row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--transfers", type=int, default=2000)
    parser.add_argument("--pg", nargs="?", const="", help="PostgreSQL (URL, or a throwaway)")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sandrun-bench-") as tmp:
        root = Path(tmp)
        if args.pg is None:
            rows = control_plane(root, None, args.jobs)
            rate = transfers(root, None, args.transfers)
        else:
            with postgres(args.pg or None) as server:
                rows = control_plane(root, server.create, args.jobs)
                rate = transfers(root, server.create, args.transfers)
        where = "SQLite" if args.pg is None else "PostgreSQL"
        show(f"control plane ({where}, three nodes played by this process)", rows)
        print(f"\nledger ({where}): {rate:,.0f} transfers/s, one per transaction")
        if not args.no_e2e:
            show("end to end (SQLite server, 3 agents of 3 operators)", [end_to_end(root, 100)])


if __name__ == "__main__":
    main()
