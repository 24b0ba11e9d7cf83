"""SQLite backend: the only module that imports sqlite3.

Connections are pooled and reused, one per concurrent transaction (WAL lets readers run
beside the single writer); writes take the lock up front with BEGIN IMMEDIATE so two
writers never deadlock on a lock upgrade.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sandrun.errors import StoreError, StoreRefused
from sandrun.store.database import (
    Row,
    Subscriber,
    deliver,
    load_query_steps,
)

# NORMAL in WAL mode: a commit survives the process being killed (kill -9); FULL also
# survives power loss, at an fsync per commit.
SYNC_MODES = ("normal", "full")


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection, queries: dict[str, list[str]]) -> None:
        self._conn = conn
        self._queries = queries
        self.changes: list[str] = []

    def notify(self, kind: str) -> None:
        self.changes.append(kind)

    def _rows(self, query: str, params: dict[str, Any]) -> list[Row]:
        first, *rest = self._queries[query]
        rows: list[Row] = self._conn.execute(first, params).fetchall()
        # Follow-up statements see the first one's returned row (see queries.sql).
        for row in rows:
            for statement in rest:
                self._conn.execute(statement, {**params, **row})
        return rows

    def run(self, query: str, **params: Any) -> int:
        statements = self._queries[query]
        if len(statements) == 1:
            return self._conn.execute(statements[0], params).rowcount
        return len(self._rows(query, params))

    def all(self, query: str, **params: Any) -> list[Row]:
        return self._rows(query, params)

    def one(self, query: str, **params: Any) -> Row | None:
        rows = self._rows(query, params)
        return rows[0] if rows else None

    def execute_raw(self, sql: str) -> list[Row]:
        """Unnamed SQL, for migrations and introspection only."""
        return self._conn.execute(sql).fetchall()


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, path: str | Path, synchronous: str = "normal") -> None:
        if synchronous not in SYNC_MODES:
            raise StoreError(f"synchronous must be one of {', '.join(SYNC_MODES)}")
        self.path = Path(path)
        self._sync = synchronous
        self._queries = load_query_steps(self.dialect)
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc.strerror}") from None

    @contextmanager
    def lane(self, name: str) -> Iterator[None]:
        """Nothing to set aside: every thread gets a connection of its own here."""
        yield

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.row_factory = _dict_row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._sync}")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store at {self.path}: {exc}") from None
        with self._lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self, write: bool = True, autocommit: bool = False) -> Iterator[_SQLiteTx]:
        conn = self._acquire()
        try:
            yield from self._in_transaction(conn, write)
        finally:
            with self._lock:
                self._idle.append(conn)

    def _in_transaction(self, conn: sqlite3.Connection, write: bool) -> Iterator[_SQLiteTx]:
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise StoreError(f"the SQLite store at {self.path} is unavailable: {exc}") from None
        tx = _SQLiteTx(conn, self._queries)
        try:
            yield tx
        except (OverflowError, sqlite3.DataError) as exc:  # an int past 64 bits, say
            conn.execute("ROLLBACK")
            raise StoreRefused(f"SQLite cannot take a value: {exc}") from None
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"SQLite error: {exc}") from None
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"SQLite commit failed: {exc}") from None
        deliver(self._subscribers, tx.changes)

    def schema_version(self) -> int:
        with self.transaction(write=False) as tx:
            if not tx.execute_raw(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ):
                return 0
            row = tx.one("schema_version")
        return int(row["version"]) if row and row["version"] is not None else 0

    def table_sql(self) -> dict[str, str]:
        """Normalized CREATE statements of every table and index (for schema checks)."""
        with self.transaction(write=False) as tx:
            rows = tx.execute_raw(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                "AND name NOT LIKE 'sqlite_%' AND name != 'schema_version'"
            )
        # ALTER TABLE ... ADD COLUMN splices text in: spacing around punctuation varies.
        return {
            r["name"]: re.sub(r"\s*([(),])\s*", r"\1", " ".join(r["sql"].split())) for r in rows
        }

    # Only this process hears: other processes on the same file (the embedded agent) are
    # woken by a datagram instead (see sandrun.embedded).
    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
            self._idle.clear()
