"""The seam between the Store and a database driver, and the named-query loader.

A backend module (sqlite.py, postgres.py) implements `Database`; it is the only code
that imports its driver, and it wraps driver errors into StoreError once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

Row = dict[str, Any]
Subscriber = Callable[[str], None]


def deliver(subscribers: list[Subscriber], kinds: list[str]) -> None:
    """Hand committed changes to this process's subscribers (wake-ups: never raises)."""
    for kind in dict.fromkeys(kinds):
        for callback in subscribers:
            try:
                callback(kind)
            except Exception:
                logging.getLogger("sandrun.store").exception("change subscriber failed")


_NAME_RE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


class Tx(Protocol):
    """One open transaction. Queries are named; see sql/queries.sql."""

    changes: list[str]  # announced with `notify`, delivered once it commits

    def run(self, query: str, **params: Any) -> int:
        """Execute; return the number of rows changed."""
        ...

    def all(self, query: str, **params: Any) -> list[Row]: ...

    def one(self, query: str, **params: Any) -> Row | None: ...

    def execute_raw(self, sql: str) -> list[Row]:
        """Unnamed SQL, for migrations and introspection only."""
        ...

    def notify(self, kind: str) -> None:
        """Announce a change of `kind` (submitted, cancel, logs, finished, lost) once this
        transaction commits."""
        ...


@contextmanager
def savepoint(tx: Tx) -> Iterator[None]:
    """A part of a transaction that fails alone: on an error its writes (and what it
    announced) are undone and the error raised; the transaction goes on. The same SQL on
    SQLite and PostgreSQL."""
    announced = len(tx.changes)
    tx.execute_raw("SAVEPOINT part")
    try:
        yield
    except BaseException:
        tx.execute_raw("ROLLBACK TO SAVEPOINT part")
        tx.execute_raw("RELEASE SAVEPOINT part")
        del tx.changes[announced:]
        raise
    tx.execute_raw("RELEASE SAVEPOINT part")


class Database(Protocol):
    dialect: str

    def transaction(
        self, write: bool = True, autocommit: bool = False
    ) -> AbstractContextManager[Tx]:
        """A transaction that commits on success and rolls back on error. `autocommit`: the
        caller needs no atomicity across its statements (each is atomic alone), so a server
        database may skip the BEGIN/COMMIT round trips; SQLite still runs one transaction."""
        ...

    def lane(self, name: str) -> AbstractContextManager[None]:
        """Inside, this thread's transactions use a connection kept for `name` alone."""
        ...

    def schema_version(self) -> int: ...

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call `callback(kind)` after each committed change announced with `Tx.notify`:
        this process's, and (PostgreSQL) those of other processes on the database."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def apply_migration(db: Database, migration: Migration) -> None:
    """Run one migration script and record its version, atomically; skipped if another
    process applied it first."""
    with db.transaction() as tx:
        tx.run("lock_migrations")
        tx.run("schema_version_table")
        current = tx.one("schema_version")
        if current and current["version"] is not None and current["version"] >= migration.version:
            return
        for statement in iter_statements(migration.sql):
            tx.execute_raw(statement)
        tx.run("set_schema_version", version=migration.version)


def _sql_dir(dialect: str) -> Any:
    return resources.files("sandrun.store") / "sql" / dialect


def _named(text: str) -> dict[str, str]:
    parts = _NAME_RE.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


# `:name` where `name` is a parameter: not a cast (`::jsonb`), not inside a word.
_PARAM_RE = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_FRAGMENT_RE = re.compile(r"\{(\w+)\}")


def load_queries(dialect: str) -> dict[str, str]:
    """Named queries for `dialect`: sql/queries.sql, with sql/<dialect>/queries.sql's
    blocks in place of the shared ones of the same name. A block named `fragment_X` is not
    a query: `{X}` in any block is replaced by it. Comment lines are dropped; PostgreSQL's
    parameters become psycopg's `%(name)s`."""
    shared = _named((resources.files("sandrun.store") / "sql" / "queries.sql").read_text())
    own = _named((_sql_dir(dialect) / "queries.sql").read_text())
    blocks = {name: _uncommented(body) for name, body in {**shared, **own}.items()}
    fragments = {
        n.removeprefix("fragment_"): b
        for n, b in blocks.items()
        if n != n.removeprefix("fragment_")
    }
    queries = {}
    for name, body in blocks.items():
        if name.startswith("fragment_"):
            continue
        body = _FRAGMENT_RE.sub(lambda m: fragments[m.group(1)], body)
        if dialect == "postgres":
            body = _PARAM_RE.sub(r"%(\1)s", body.replace("%", "%%"))
        queries[name] = body
    return queries


def _uncommented(body: str) -> str:
    return "\n".join(ln for ln in body.splitlines() if not ln.strip().startswith("--")).strip()


def load_query_steps(dialect: str) -> dict[str, list[str]]:
    """Named queries, each as its list of statements (a block may hold several)."""
    return {name: list(iter_statements(body)) for name, body in load_queries(dialect).items()}


def load_migrations(dialect: str) -> list[Migration]:
    """Numbered migrations from sql/<dialect>/migrations/NNNN_name.sql, in order."""
    found = []
    for entry in (_sql_dir(dialect) / "migrations").iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    return found


def load_schema(dialect: str) -> str:
    text: str = (_sql_dir(dialect) / "schema.sql").read_text()
    return text


def iter_statements(sql: str) -> Iterator[str]:
    """Split a script on ';' at line ends (our .sql files keep one statement per ';')."""
    for statement in re.split(r";\s*$", sql, flags=re.MULTILINE):
        lines = [ln for ln in statement.splitlines() if not ln.strip().startswith("--")]
        body = "\n".join(lines).strip()
        if body:
            yield body
