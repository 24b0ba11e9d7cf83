"""PostgreSQL backend: the only module that imports psycopg.

Transactions come from a psycopg_pool connection pool (READ COMMITTED; the queries lock
the job rows they change). Changes are announced with NOTIFY on one channel and heard by
a LISTEN thread, so several server processes sharing the database wake each other's
long-polls; each process tags its notifications and ignores its own, which it has
already delivered in-process.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from sandrun.errors import StoreError, StoreRefused
from sandrun.store.database import Row, Subscriber, deliver, load_queries

log = logging.getLogger("sandrun.store")

CHANNEL = "sandrun_changes"
_CONNECT_TIMEOUT = 10  # seconds


def describe(url: str) -> str:
    """The database a URL names, without its password (for messages and logs)."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL (unparsable URL)"
    host = parts.get("host") or "local socket"
    port = parts.get("port") or "5432"
    return f"postgresql://{host}:{port}/{parts.get('dbname') or ''}"


class _PgTx:
    def __init__(self, conn: psycopg.Connection[Row], queries: dict[str, str], origin: str) -> None:
        self._cur = conn.cursor()  # one per transaction: a cursor per statement costs ~40%
        self._queries = queries
        self._origin = origin
        self.changes: list[str] = []

    def notify(self, kind: str) -> None:
        # NOTIFY is transactional: other servers hear it only if this commits.
        if kind not in self.changes:
            self._cur.execute(
                "SELECT pg_notify(%(channel)s, %(payload)s)",
                {"channel": CHANNEL, "payload": f"{self._origin} {kind}"},
            )
        self.changes.append(kind)

    def run(self, query: str, **params: Any) -> int:
        return self._cur.execute(self._queries[query], params).rowcount

    def all(self, query: str, **params: Any) -> list[Row]:
        return self._cur.execute(self._queries[query], params).fetchall()

    def one(self, query: str, **params: Any) -> Row | None:
        return self._cur.execute(self._queries[query], params).fetchone()

    def execute_raw(self, sql: str, params: dict[str, Any] | None = None) -> list[Row]:
        """Unnamed SQL, for migrations and introspection only."""
        cur = self._cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


class PostgresDatabase:
    dialect = "postgres"

    def __init__(self, url: str, *, max_connections: int = 16) -> None:
        self.url = url
        self.name = describe(url)
        self._queries = load_queries(self.dialect)
        self._origin = uuid.uuid4().hex[:12]
        self._subscribers: list[Subscriber] = []
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._check_reachable()
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"row_factory": dict_row, "connect_timeout": _CONNECT_TIMEOUT},
            open=False,
            name="sandrun",
        )
        try:
            self._pool.open(wait=True, timeout=_CONNECT_TIMEOUT)
        except PoolTimeout:
            self._pool.close()
            raise StoreError(f"cannot connect to {self.name}: timed out") from None
        self._lanes: dict[str, ConnectionPool[psycopg.Connection[Row]]] = {}
        self._on_lane = threading.local()

    @contextmanager
    def lane(self, name: str) -> Iterator[None]:
        """This thread's transactions, inside, use a connection of their own kept for
        `name` (one, opened on first use), never waiting behind the shared pool's: the
        server's heartbeats must not queue behind long-polls and reports."""
        with self._lock:
            pool = self._lanes.get(name)
            if pool is None:
                pool = self._lanes[name] = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=1,
                    kwargs={"row_factory": dict_row, "connect_timeout": _CONNECT_TIMEOUT},
                    open=True,
                    name=f"sandrun-{name}",
                )
        before = getattr(self._on_lane, "pool", None)
        self._on_lane.pool = pool
        try:
            yield
        finally:
            self._on_lane.pool = before

    def _check_reachable(self) -> None:
        # One plain connection first: the pool would retry quietly, hiding the reason.
        try:
            psycopg.connect(self.url, connect_timeout=_CONNECT_TIMEOUT).close()
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc)
            raise StoreError(
                f"cannot connect to {self.name}: {reason}",
                suggestions=["check the URL, that the server runs and the database exists"],
            ) from None

    @contextmanager
    def transaction(self, write: bool = True, autocommit: bool = False) -> Iterator[_PgTx]:
        # Reads and single statements run in autocommit: no BEGIN/COMMIT round trips (each
        # statement sees the latest commits, as READ COMMITTED would anyway, and is atomic
        # on its own). Writes lock the rows they change.
        pool = getattr(self._on_lane, "pool", None) or self._pool
        try:
            with pool.connection() as conn:
                conn.autocommit = autocommit or not write
                tx = _PgTx(conn, self._queries, self._origin)
                yield tx
        except PoolTimeout:
            raise StoreError(f"no free connection to {self.name}") from None
        except psycopg.DataError as exc:  # the request's value, not the store: a 4xx
            raise StoreRefused(f"PostgreSQL cannot take a value: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL error: {_first_line(exc)}") from None
        deliver(self._subscribers, tx.changes)

    # --- schema -----------------------------------------------------------------------

    def schema_version(self) -> int:
        with self.transaction(write=False) as tx:
            exists = tx.execute_raw("SELECT to_regclass('schema_version') IS NOT NULL AS e")
            if not exists[0]["e"]:
                return 0
            row = tx.one("schema_version")
        return int(row["version"]) if row and row["version"] is not None else 0

    def table_sql(self) -> dict[str, str]:
        """Each table's columns and constraints, and each index's definition (schema checks)."""
        with self.transaction(write=False) as tx:
            columns = tx.execute_raw(
                "SELECT c.relname AS t, a.attname AS col, format_type(a.atttypid, a.atttypmod)"
                " AS type, a.attnotnull AS notnull, pg_get_expr(d.adbin, d.adrelid) AS dflt,"
                " a.attidentity AS ident"
                " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
                " WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attnum > 0"
                " AND NOT a.attisdropped AND c.relname != 'schema_version'"
                " ORDER BY c.relname, a.attnum"
            )
            constraints = tx.execute_raw(
                "SELECT c.relname AS t, pg_get_constraintdef(k.oid) AS def"
                " FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() ORDER BY 1, 2"
            )
            options = tx.execute_raw(
                "SELECT c.relname AS t, array_to_string(c.reloptions, ',') AS opts"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.reloptions IS NOT NULL"
            )
            indexes = tx.execute_raw(
                "SELECT indexname AS name, indexdef AS def FROM pg_indexes"
                " WHERE schemaname = current_schema() AND tablename != 'schema_version'"
            )
        out: dict[str, list[str]] = {}
        for c in columns:
            out.setdefault(c["t"], []).append(
                f"{c['col']} {c['type']} notnull={c['notnull']} default={c['dflt']} "
                f"identity={c['ident']}"
            )
        for k in constraints:
            out.setdefault(k["t"], []).append(k["def"])
        for o in options:
            out.setdefault(o["t"], []).append(f"with ({o['opts']})")
        result = {name: "; ".join(parts) for name, parts in out.items()}
        result.update({i["name"]: i["def"] for i in indexes})
        return result

    # --- change notifications ---------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback(kind)` after each change committed here or by another process."""
        self._subscribers.append(callback)
        if self._listener is None:
            self._listener = threading.Thread(
                target=self._listen, name="sandrun-listen", daemon=True
            )
            self._listener.start()

    def _listen(self) -> None:
        while not self._closing.is_set():
            try:
                with psycopg.connect(
                    self.url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Anything may have changed while we were not listening.
                    deliver(self._subscribers, ["reconnected"])
                    while not self._closing.is_set():
                        for note in conn.notifies(timeout=1.0):
                            origin, _, kind = note.payload.partition(" ")
                            if origin != self._origin:  # ours were delivered at commit
                                deliver(self._subscribers, [kind])
            except psycopg.Error as exc:
                if self._closing.is_set():
                    return
                log.warning("listening on %s failed (%s); retrying", self.name, _first_line(exc))
                self._closing.wait(1.0)

    def close(self) -> None:
        self._closing.set()
        self._pool.close()
        for lane in self._lanes.values():
            lane.close()
        if self._listener is not None:
            self._listener.join(timeout=5)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
