"""The numbered migrations build exactly the schema that schema.sql describes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandrun.errors import SchemaTooNew
from sandrun.store import Store, open_sqlite
from sandrun.store.database import iter_statements, load_schema
from sandrun.store.sqlite import SQLiteDatabase


def test_sqlite_migrations_produce_the_schema(tmp_path: Path) -> None:
    migrated = open_sqlite(tmp_path / "migrated.db")
    reference = SQLiteDatabase(tmp_path / "reference.db")
    with reference.transaction() as tx:
        for statement in iter_statements(load_schema("sqlite")):
            tx.execute_raw(statement)
    assert isinstance(migrated.db, SQLiteDatabase)
    assert migrated.db.table_sql() == reference.table_sql()
    migrated.close()
    reference.close()


def test_migrating_twice_is_harmless(tmp_path: Path) -> None:
    first = open_sqlite(tmp_path / "s.db")
    version = first.migrate()
    assert first.migrate() == version
    first.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path / "s.db")
    with store.db.transaction() as tx:
        tx.run("set_schema_version", version=999)
    store.close()
    with pytest.raises(SchemaTooNew, match="version 999"):
        Store(SQLiteDatabase(tmp_path / "s.db")).migrate()
