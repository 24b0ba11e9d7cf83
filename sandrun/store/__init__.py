"""Durable state: the Store (queue rules, state changes) over a per-backend Database."""

from __future__ import annotations

from pathlib import Path

from sandrun.store.changes import Decide
from sandrun.store.database import Database
from sandrun.store.sqlite import SQLiteDatabase
from sandrun.store.store import Store
from sandrun.store.transitions import Decision

__all__ = ["Decide", "Decision", "Store", "is_postgres_url", "open_database", "open_sqlite"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(db: str) -> bool:
    return db.startswith(POSTGRES_SCHEMES)


def open_database(db: str | Path) -> Database:
    """A PostgreSQL URL or a SQLite file (a path or sqlite:///path); nothing is migrated."""
    text = str(db)
    if is_postgres_url(text):
        from sandrun.store.postgres import PostgresDatabase  # psycopg loads only when used

        return PostgresDatabase(text)
    return SQLiteDatabase(text.removeprefix("sqlite:///"))


def open_sqlite(path: str | Path, synchronous: str = "normal") -> Store:
    """Open (creating and migrating as needed) the SQLite store at `path`."""
    store = Store(SQLiteDatabase(path, synchronous=synchronous))
    store.migrate()
    return store
