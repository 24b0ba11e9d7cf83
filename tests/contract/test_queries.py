"""Both dialects define the same named queries, and the code uses every one of them."""

from __future__ import annotations

import re
from pathlib import Path

from sandrun.store.database import load_queries

PACKAGE = Path(__file__).resolve().parents[2] / "sandrun"


def test_both_dialects_name_the_same_queries() -> None:
    assert set(load_queries("sqlite")) == set(load_queries("postgres"))


def test_every_named_query_is_used() -> None:
    code = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    used = set(re.findall(r'"(\w+)"', code))
    assert sorted(set(load_queries("sqlite")) - used) == []
