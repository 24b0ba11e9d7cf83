"""The store contract runs against every backend; PostgreSQL joins the list later."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandrun.store import Store, open_sqlite

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = open_sqlite(tmp_path / "store.db")
    yield s
    s.close()
