"""PostgreSQL against SQLite in the same run: jobs/s through the server, and claims/s of
the Store, with a raw `FOR UPDATE SKIP LOCKED` loop on the same database as the ceiling.

    python bench/pg_throughput.py [--jobs 1000] [--claims 5000] [--pg URL]

Without --pg, a throwaway PostgreSQL cluster is started (initdb + pg_ctl, as in the
tests) with synchronous_commit=off, which matches SQLite's synchronous=NORMAL: a commit
survives sandrun being killed. A --pg URL must name a database its user may create
databases from; the benchmark makes and drops its own.

1. End to end: 2 agents (1 CPU each) and N jobs of `true` through one server on SQLite,
   one on PostgreSQL, and two on PostgreSQL (each agent on its own, the client on both).
2. Claims: N pending jobs inserted (then VACUUM ANALYZE, as autovacuum would do), then
   claimed by 2 threads through `Store.claim` (one transaction: claim the row, insert the
   attempt and its event) until none is left.
3. Raw: the same N rows claimed by 2 threads with one UPDATE ... WHERE id = (SELECT ...
   FOR UPDATE SKIP LOCKED) per transaction and nothing else: the ceiling for claims.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from server_throughput import measure, serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.pg
from sandrun.client import connect
from sandrun.models import Capacity, JobRecord
from sandrun.spec import parse_spec
from sandrun.store import Store, open_sqlite
from sandrun.store.postgres import PostgresDatabase
from tests.pg import DURABLE, PgServer, throwaway_cluster

FREE = Capacity(cpus=64, memory_mb=1 << 20, gpus=8)
THREADS = 2


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[PgServer]:
    if url:
        yield PgServer(url)
    else:
        with throwaway_cluster(DURABLE) as server:
            yield server


def fill(store: Store, count: int) -> None:
    spec = parse_spec({"command": ["true"]})
    for i in range(count):
        store.insert_job(JobRecord.submitted(spec, "bench", 1000.0 + i))


def analyze(url: str) -> None:
    """Fresh statistics, as autovacuum gives a queue table within a minute of a burst of
    submits (see migration 0002); without them a claim sorts every pending job."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE jobs")


def in_threads(work: Callable[[], int]) -> float:
    """Run `work` on THREADS threads at once; the total it returns per second."""
    done: list[int] = []
    threads = [threading.Thread(target=lambda: done.append(work())) for _ in range(THREADS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def store_claims(store: Store) -> float:
    def work() -> int:
        n = 0
        while store.claim(f"node-{threading.get_ident()}", FREE, 1e12, 30.0) is not None:
            n += 1
        return n

    return in_threads(work)


RAW_CLAIM = """
UPDATE jobs SET state = 'scheduled', attempts = attempts + 1
WHERE id = (SELECT id FROM jobs WHERE state = 'pending'
            ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""


def raw_claims(url: str) -> float:
    def work() -> int:
        n = 0
        with psycopg.connect(url) as conn:
            while True:
                with conn.transaction():
                    if conn.execute(RAW_CLAIM).fetchone() is None:
                        return n
                n += 1

    return in_threads(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--claims", type=int, default=5000)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--pg", help="postgresql:// URL (default: a throwaway cluster)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, postgres(args.pg) as pg:
        root = Path(tmp)
        ends: dict[str, tuple[float, list[float]]] = {}
        for label, servers in (("sqlite", 1), ("postgres", 1), ("postgres, 2 servers", 2)):
            db = pg.create() if label.startswith("postgres") else None
            url, token, procs = serve(root / label.replace(" ", ""), [1.0, 1.0], db, servers)
            try:
                with connect(url, token=token) as client:
                    ends[label] = measure(client, args.jobs, args.latency_samples)
            finally:
                for proc in reversed(procs):
                    proc.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(60)

        claims: dict[str, float] = {}
        sqlite = open_sqlite(root / "claims.db")
        fill(sqlite, args.claims)
        claims["sqlite"] = store_claims(sqlite)
        sqlite.close()
        pg_url = pg.create()
        store = Store(PostgresDatabase(pg_url))
        store.migrate()
        fill(store, args.claims)
        analyze(pg_url)
        claims["postgres"] = store_claims(store)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE jobs SET state = 'pending', attempts = 0")
            conn.execute("VACUUM ANALYZE jobs")
        claims["raw"] = raw_claims(pg_url)
        store.close()

    print(f"end to end, 2 agents, {args.jobs} jobs of `true`:")
    for label, (rate, lat) in ends.items():
        p50 = sorted(lat)[len(lat) // 2] * 1000
        ratio = rate / ends["sqlite"][0]
        print(
            f"  {label:<20} {rate:7.0f} jobs/s  {ratio:5.2f} of sqlite  "
            f"submit->start p50 {p50:5.1f} ms"
        )
    print("  target: postgres >= sqlite")
    print(f"claims by {THREADS} threads, {args.claims} pending jobs:")
    for name, rate in claims.items():
        print(f"  {name:<9} {rate:7.0f} claims/s")
    print(f"  postgres Store.claim / raw SKIP LOCKED: {claims['postgres'] / claims['raw']:.2f}"
          " (target >= 0.5)")  # fmt: skip
    print(
        f"  sqlite Store.claim / postgres Store.claim: {claims['sqlite'] / claims['postgres']:.2f}"
    )


if __name__ == "__main__":
    main()
