"""Many simulated agents on one server: heartbeat and claim latency, server CPU, leases lost.

    python bench/agents.py [--agents 200,1000] [--db sqlite|postgres] [--servers 1]
        [--workers 1] [--seconds 30] [--beat 1.0] [--wait 20] [--rate 0] [--queue 0]
        [--job-seconds 0] [--procs 1] [--pg URL]

Each simulated agent is a pair of coroutines, as a real agent's threads: it registers, then
heartbeats every `--beat` seconds (starting at a random point of the interval) and
long-polls `POST /v1/agent/claim` with `wait`. A job it claims runs `--job-seconds` (0.5
to 1.5 times that; default no time); its start and end go in one `POST /v1/agent/report`
that claims the next job, as a real agent's do while the queue is deep. The agents run in
`--procs` processes (asyncio + uvloop, two keep-alive connections per agent), spread over
the servers. Optional load: `--rate` jobs/s submitted while it runs, `--queue` jobs queued
before it starts (copied straight into the store, as a backlog would be).

It prints, after a warm-up of `--wait` seconds (every agent has registered and polled):
heartbeats answered per second (of those sent) and their latency p50/p99/max; jobs run per
second and the latency of the calls that brought them (claims and reports); the servers'
CPU (% of one core) and RSS; the database's connections; leases lost (attempts ended
`node_lost`) and nodes whose last heartbeat was older than a lease when sampled; the
simulators' CPU and the whole host's. Beside the simulators' own figures, a probe agent in
the parent process heartbeats five times a second with a plain client: its latency
(`probe50`, `p99`) is the server's alone, without the simulators' event loops, which a
thousand agents keep busy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from server_throughput import serve, stop
from throughput import percentile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.pg
from sandrun.models import JobRecord, Role
from sandrun.server import open_server_service
from sandrun.spec import parse_spec
from sandrun.store import Store, open_database
from tests.pg import DURABLE, PgServer, throwaway_cluster

CAPACITY = {"cpus": 4, "memory_mb": 8192, "gpus": 0}


# --- one simulator process ---------------------------------------------------------------


class Tally:
    def __init__(self, measure_from: float) -> None:
        self.measure_from = measure_from
        self.beats: list[float] = []
        self.beats_sent = 0
        self.claims: list[float] = []  # claims that brought a job
        self.empty_claims = 0
        self.errors: dict[str, int] = {}

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def counting(self) -> bool:
        return time.monotonic() >= self.measure_from


class Conn:
    """One keep-alive HTTP/1.1 connection, as an agent's thread holds one: httpx's pool
    costs more CPU per request than the server does, and the simulator would measure
    itself."""

    def __init__(self, url: str, token: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.auth = f"Bearer {token}"
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: dict[str, Any], timeout: float = 120) -> Any:
        """The reply's JSON (None for 204); raises OSError or TimeoutError, HTTPStatus.
        A kept-alive connection the server closed while idle is opened again once, as
        HTTP clients do."""
        reused = self.streams is not None
        try:
            return await asyncio.wait_for(self._post(path, body), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            if not reused:
                raise
        except BaseException:
            self.close()  # a half-read reply would poison the next request
            raise
        try:
            return await asyncio.wait_for(self._post(path, body), timeout)
        except BaseException:
            self.close()
            raise

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        data = json.dumps(body).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: {self.auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await reader.readexactly(length) if length else b""
        if status >= 400:
            raise HTTPStatus(f"{path} answered {status}: {payload[:200]!r}")
        return json.loads(payload) if payload else None

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


class HTTPStatus(Exception):
    pass


ERRORS = (OSError, TimeoutError, HTTPStatus, asyncio.IncompleteReadError)


async def _agent(
    url: str, token: str, name: str, args: argparse.Namespace, tally: Tally, end: float
) -> None:
    main, polls = Conn(url, token), Conn(url, token)  # an agent's two threads
    # Agents start over the warm-up, not all in one instant (a listen backlog would
    # overflow), and register again after a refusal, as a real agent does.
    await asyncio.sleep(random.uniform(0, 0.8 * args.wait))
    while True:
        try:
            reply = await main.post("/v1/agent/register", {"name": name, "capacity": CAPACITY})
            break
        except ERRORS as exc:
            tally.error(f"register: {type(exc).__name__}")
            await asyncio.sleep(1)
    node = reply["node_id"]
    held: list[dict[str, Any]] = []

    async def beats() -> None:
        # Agents start at different times, so their beats are spread over the interval.
        await asyncio.sleep(random.uniform(0, args.beat))
        while time.monotonic() < end:
            sent = time.monotonic()
            counting = tally.counting()
            try:
                await main.post("/v1/agent/heartbeat", {"node": node, "leases": held})
                if counting:
                    tally.beats.append(time.monotonic() - sent)
            except ERRORS as exc:
                tally.error(f"heartbeat: {type(exc).__name__}")
            if counting:
                tally.beats_sent += 1
            await asyncio.sleep(max(0.0, args.beat - (time.monotonic() - sent)))

    async def claims() -> None:
        """As a real agent: long-poll when idle; report each job's start and end with a
        claim for the room it leaves (one call per job while the queue is deep)."""
        claimed: list[dict[str, Any]] = []
        while time.monotonic() < end:
            sent = time.monotonic()
            if not claimed:
                wait = min(args.wait, max(0.0, end - sent))
                try:
                    body = {"node": node, "free": CAPACITY, "wait": wait}
                    got = await polls.post("/v1/agent/claim", body, timeout=wait + 120)
                except ERRORS as exc:
                    tally.error(f"claim: {type(exc).__name__}")
                    await asyncio.sleep(1)
                    continue
                if got is None:
                    tally.empty_claims += tally.counting()
                    continue
                if tally.counting():
                    tally.claims.append(time.monotonic() - sent)
                claimed = [got]
            claim = claimed.pop()
            if args.job_seconds:  # the job runs; its start is reported with its end
                await asyncio.sleep(random.uniform(0.5, 1.5) * args.job_seconds)
            ref = {"job_id": claim["job"]["id"], "attempt": claim["attempt"]}
            ref["token"] = claim["token"]
            held.append(ref)
            report = {
                "node": node,
                "starts": [{"ref": ref}],
                "ends": [{"ref": ref, "result": {"exit_code": 0}}],
                "room": CAPACITY,
                "max_claims": 1,
            }
            sent = time.monotonic()
            try:
                reply = await polls.post("/v1/agent/report", report)
            except ERRORS as exc:
                tally.error(f"report: {type(exc).__name__}")
                reply = {"claims": []}
            held.remove(ref)
            if reply["claims"] and tally.counting():
                tally.claims.append(time.monotonic() - sent)
            claimed = reply["claims"]

    try:
        await asyncio.gather(beats(), claims())
    finally:
        main.close()
        polls.close()


async def simulate(args: argparse.Namespace) -> dict[str, Any]:
    urls = args.url.split(",")
    start = time.monotonic()
    end = start + args.wait + args.seconds
    tally = Tally(start + args.wait)
    await asyncio.gather(
        *(
            _agent(urls[i % len(urls)], args.token, f"sim{args.first + i}", args, tally, end)
            for i in range(args.count)
        )
    )
    cpu = psutil.Process().cpu_times()
    return {
        "beats": tally.beats,
        "beats_sent": tally.beats_sent,
        "claims": tally.claims,
        "empty_claims": tally.empty_claims,
        "errors": tally.errors,
        "cpu": cpu.user + cpu.system,
    }


def child_main(args: argparse.Namespace) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    Path(args.out).write_text(json.dumps(asyncio.run(simulate(args))))


# --- the run -------------------------------------------------------------------------------


def fill(db: str, count: int) -> None:
    """`count` pending jobs of `true`. On PostgreSQL one is submitted through the store and
    copied in one statement (a million in seconds), then analysed as autovacuum would."""
    store = Store(open_database(db))
    spec = parse_spec({"command": ["true"]})
    try:
        template = JobRecord.submitted(spec, "bench", 1000.0)
        store.insert_job(template)
        if not db.startswith("postgresql"):
            for i in range(1, count):
                store.insert_job(JobRecord.submitted(spec, "bench", 1000.0 + i))
            return
    finally:
        store.close()
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'jobs' AND table_schema = current_schema()"
            )
        ]
        made = {"id": "gen_random_uuid()::text", "created_at": "created_at + g"}
        picked = ", ".join(made.get(c, c) for c in columns)
        conn.execute(
            f"INSERT INTO jobs ({', '.join(columns)}) SELECT {picked}"
            " FROM jobs, generate_series(1, %s) AS g WHERE id = %s",
            (count - 1, template.id),
        )
        conn.execute("VACUUM ANALYZE jobs")


def count_lost(db: str) -> int:
    store = Store(open_database(db))
    try:
        with store.db.transaction(write=False) as tx:
            rows = tx.execute_raw(
                "SELECT count(*) AS n FROM attempts WHERE failure_reason = 'node_lost'"
            )
        return int(rows[0]["n"])
    finally:
        store.close()


def pg_connections(db: str) -> int | None:
    if not db.startswith("postgresql"):
        return None
    import psycopg

    name = db.rsplit("/", 1)[1]
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else None


def server_pids(procs: list[subprocess.Popen[bytes]]) -> list[psutil.Process]:
    """Every server process, with the workers a `--workers N` server forked."""
    out = []
    for p in procs:
        proc = psutil.Process(p.pid)
        out += [proc, *proc.children(recursive=True)]
    return out


def cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def stale_nodes(store: Store, lease: float) -> int:
    """Nodes whose last heartbeat is older than a lease, read from the database (asking
    the server would add a thousand-node listing a second to what is measured)."""
    now = time.time()
    return sum(now - n.heartbeat_at > lease for n in store.nodes())


def run_one(root: Path, db: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    open_server_service(db, artifacts=root / "artifacts").close()  # the schema, for `fill`
    if args.queue:
        fill(db, args.queue)
    server_args = ("--workers", str(args.workers)) if args.workers > 1 else ()
    url, user, procs = serve(root, [], db, args.servers, server_args=server_args)
    agent_token = _agent_token(db)
    servers = server_pids(procs)
    per = [n // args.procs + (i < n % args.procs) for i in range(args.procs)]
    children = []
    first = 0
    for count in per:
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    "--url",
                    url,
                    "--token",
                    agent_token,
                    "--count",
                    str(count),
                    "--first",
                    str(first),
                    "--beat",
                    str(args.beat),
                    "--wait",
                    str(args.wait),
                    "--job-seconds",
                    str(args.job_seconds),
                    "--seconds",
                    str(args.seconds),
                    "--out",
                    str(root / f"sim{first}.json"),
                ]
            )
        )
        first += count
    time.sleep(args.wait)  # the simulators' own warm-up: registering and first polls
    cpu0, t0 = cpu_of(servers), time.monotonic()
    host0 = psutil.cpu_times()
    stale = 0
    submitted = 0
    probes: list[float] = []  # a heartbeat sent from outside the simulators
    lease = 30.0
    store = Store(open_database(db))
    agent = {"Authorization": f"Bearer {agent_token}"}
    with httpx.Client(
        base_url=url.split(",")[0], timeout=60, headers={"Authorization": f"Bearer {user}"}
    ) as http:
        probe = http.post(
            "/v1/agent/register", json={"name": "probe", "capacity": CAPACITY}, headers=agent
        ).json()["node_id"]
        while time.monotonic() - t0 < args.seconds:
            tick = time.monotonic()
            if args.rate:
                batch = [{"command": ["true"]}] * max(1, int(args.rate))
                http.post("/v1/jobs/batch", json={"jobs": batch}).raise_for_status()
                submitted += len(batch)
            stale = max(stale, stale_nodes(store, lease))
            for _ in range(5):
                sent = time.monotonic()
                beat = {"node": probe, "leases": []}
                http.post("/v1/agent/heartbeat", json=beat, headers=agent).raise_for_status()
                probes.append(time.monotonic() - sent)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    store.close()
    cpu = (cpu_of(servers) - cpu0) / (time.monotonic() - t0)
    host1 = psutil.cpu_times()
    busy = 1 - (host1.idle - host0.idle) / (sum(host1) - sum(host0))
    rss = sum(p.memory_info().rss for p in servers if p.is_running())
    conns = pg_connections(db)
    for child in children:
        child.wait()
    results = [json.loads(out.read_text()) for out in sorted(root.glob("sim*.json"))]
    stop(procs)
    merged: dict[str, Any] = {"beats": [], "claims": [], "errors": {}}
    sent = empty = 0
    for r in results:
        for key in ("beats", "claims"):
            merged[key] += r[key]
        sent += r["beats_sent"]
        empty += r["empty_claims"]
        for k, v in r["errors"].items():
            merged["errors"][k] = merged["errors"].get(k, 0) + v
    return {
        **merged,
        "beats_sent": sent,
        "empty_claims": empty,
        "server_cpu": cpu,
        "host_busy": busy,
        "rss_mb": rss / 2**20,
        "connections": conns,
        "lost": count_lost(db),
        "stale_nodes": stale,
        "submitted": submitted,
        "probes": probes,
        "client_cpu": sum(r["cpu"] for r in results),
    }


def _agent_token(db: str) -> str:
    service = open_server_service(db)
    try:
        return service.create_token("sim-agents", Role.AGENT)
    finally:
        service.close()


def report(label: str, n: int, r: dict[str, Any], seconds: float) -> None:
    def ms(xs: list[float], q: float) -> str:
        return f"{percentile(xs, q) * 1000:8.1f}" if xs else "       -"

    beats = r["beats"]
    print(
        f"{label:<22} {n:>6} {len(beats) / seconds:7.0f}/{r['beats_sent'] / seconds:<6.0f}"
        f"{ms(beats, 50)} {ms(beats, 99)} {max(beats, default=0) * 1000:8.0f}"
        f"{ms(r['probes'], 50)} {ms(r['probes'], 99)}"
        f" {len(r['claims']) / seconds:7.0f} {ms(r['claims'], 50)} {ms(r['claims'], 99)}"
        f" {r['server_cpu']:6.0%} {r['rss_mb']:7.0f} {r['connections'] or '-':>5}"
        f" {r['lost']:>5} {r['stale_nodes']:>5} {r['client_cpu'] / seconds:6.0%}"
        f" {r['host_busy']:6.0%}"
    )
    if r["errors"]:
        print(f"{'':<22} errors: {r['errors']}")


def main() -> None:
    # Every agent holds two connections, and so does the server for each.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="200,1000", help="comma-separated counts")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--pg", help="postgresql:// URL (default: a throwaway cluster)")
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="sandrun server --workers")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--beat", type=float, default=1.0, help="heartbeat interval, s")
    parser.add_argument("--wait", type=float, default=20, help="claim long-poll, s")
    parser.add_argument("--rate", type=float, default=0, help="jobs submitted per second")
    parser.add_argument("--queue", type=int, default=0, help="jobs queued before the run")
    parser.add_argument(
        "--job-seconds", type=float, default=0, help="how long a job runs (0.5x to 1.5x this)"
    )
    parser.add_argument("--procs", type=int, default=1, help="simulator processes")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    print(
        f"{args.db}, {args.servers} server(s) x {args.workers} worker(s), heartbeat every "
        f"{args.beat} s, claim wait {args.wait} s, {args.rate} jobs/s, {args.queue} queued, "
        f"{args.seconds} s measured; {os.cpu_count()} cores"
    )
    print(
        f"{'':<22} {'agents':>6} {'beats/s (sent)':<14}{'p50 ms':>8} {'p99':>8} {'max':>8}"
        f"{'probe50':>9} {'p99':>8} {'jobs/s':>7} {'claim50':>8} {'p99':>8}"
        f" {'cpu':>6} {'RSS MB':>7} {'conns':>5} {'lost':>5} {'stale':>5}"
        f" {'sim cpu':>6} {'host':>6}"
    )
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        pg: PgServer | None = None
        if args.db == "postgres":
            pg = PgServer(args.pg) if args.pg else stack.enter_context(throwaway_cluster(DURABLE))
        for n in (int(x) for x in args.agents.split(",")):
            db = pg.create() if pg else str(tmp / f"{n}" / "server.db")
            r = run_one(tmp / str(n), db, n, args)
            report(args.db, n, r, args.seconds)
            if pg:
                pg.drop(db)


if __name__ == "__main__":
    main()
