"""Durable state: the Store (queue rules, state changes) over a per-backend Database."""

from __future__ import annotations

from pathlib import Path

from sandrun.store.changes import Decide, Decision
from sandrun.store.sqlite import SQLiteDatabase
from sandrun.store.store import Store

__all__ = ["Decide", "Decision", "Store", "open_sqlite"]


def open_sqlite(path: str | Path, synchronous: str = "normal") -> Store:
    """Open (creating and migrating as needed) the SQLite store at `path`."""
    store = Store(SQLiteDatabase(path, synchronous=synchronous))
    store.migrate()
    return store
