"""The store contract runs against every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandrun.store import Store, open_sqlite
from sandrun.store.postgres import PostgresDatabase

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = open_sqlite(tmp_path / "store.db")
    else:
        s = Store(PostgresDatabase(request.getfixturevalue("pg_url")))
        s.migrate()
    yield s
    s.close()
