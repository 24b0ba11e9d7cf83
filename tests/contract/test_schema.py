"""The numbered migrations build exactly the schema that schema.sql describes, on every
backend, and a database of another version is handled as the operator would expect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandrun.errors import SchemaTooNew, SchemaTooOld
from sandrun.store import Store
from sandrun.store.database import (
    apply_migration,
    iter_statements,
    load_migrations,
    load_schema,
)
from sandrun.store.postgres import PostgresDatabase
from sandrun.store.sqlite import SQLiteDatabase
from tests.pg import PgServer

Db = SQLiteDatabase | PostgresDatabase


@pytest.fixture(params=["sqlite", "postgres"])
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, object]]:
    """A factory of empty databases on one backend: each call gives a new one."""
    if request.param == "sqlite":
        counter = iter(range(100))
        yield "sqlite", lambda: SQLiteDatabase(tmp_path / f"db{next(counter)}.sqlite")
        return
    pg: PgServer = request.getfixturevalue("pg")
    urls: list[str] = []

    def make() -> PostgresDatabase:
        urls.append(pg.create())
        return PostgresDatabase(urls[-1])

    yield "postgres", make
    for url in urls:
        pg.drop(url)


def test_migrations_from_an_empty_database_produce_the_schema(empty: tuple[str, object]) -> None:
    dialect, make = empty
    migrated = Store(make())  # type: ignore[operator]
    migrated.migrate()
    reference: Db = make()  # type: ignore[operator]
    with reference.transaction() as tx:
        for statement in iter_statements(load_schema(dialect)):
            tx.execute_raw(statement)
    assert isinstance(migrated.db, SQLiteDatabase | PostgresDatabase)
    tables = migrated.db.table_sql()
    assert {"jobs", "attempts", "events", "logs", "outputs", "nodes", "tokens"} <= set(tables)
    assert tables == reference.table_sql()
    migrated.close()
    reference.close()


def test_migrating_twice_is_harmless(empty: tuple[str, object]) -> None:
    _, make = empty
    store = Store(make())  # type: ignore[operator]
    version = store.migrate()
    assert store.migrate() == version == store.db.schema_version()
    store.close()


def test_a_newer_schema_is_refused(empty: tuple[str, object]) -> None:
    _, make = empty
    store = Store(make())  # type: ignore[operator]
    store.migrate()
    with store.db.transaction() as tx:
        tx.run("set_schema_version", version=999)
    with pytest.raises(SchemaTooNew, match="version 999"):
        store.migrate()
    store.close()


def test_an_older_schema_waits_for_an_explicit_upgrade(empty: tuple[str, object]) -> None:
    dialect, make = empty
    store = Store(make())  # type: ignore[operator]
    first = load_migrations(dialect)[0]
    apply_migration(store.db, first)
    with pytest.raises(SchemaTooOld, match="sandrun db upgrade"):
        store.migrate(upgrade=False)
    assert store.db.schema_version() == first.version
    assert store.migrate(upgrade=True) == load_migrations(dialect)[-1].version
    store.close()
